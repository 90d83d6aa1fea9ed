"""``python -m benchmarks.bench_shac --breakdown`` times MuJoCo's phases one by one: they must be all of
``mjx.step``, in its order, or the table says where the time goes in a step MJX does not take."""

import functools

import jax
import mujoco
import numpy as np
from mujoco import mjx

from benchmarks.bench_shac import mjx_phases

# A hinged, actuated capsule pair resting on the ground: every phase has work (contacts, constraint rows,
# actuation, a joint limit).
BODY = """
<mujoco>
  <option timestep="0.002" integrator="Euler" iterations="1" ls_iterations="4"/>
  <worldbody>
    <geom type="plane" size="5 5 0.1"/>
    <body pos="0 0 0.098">
      <freejoint/>
      <geom type="capsule" fromto="-0.2 0 0 0.2 0 0" size="0.1"/>
      <body pos="0.2 0 0">
        <joint name="hinge" type="hinge" axis="0 1 0" range="-30 30" limited="true"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.05"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" gear="10"/></actuator>
</mujoco>
"""


def test_the_breakdowns_phases_compose_to_mjx_step():
    model = mjx.put_model(mujoco.MjModel.from_xml_string(BODY))
    data = mjx.make_data(model).replace(ctrl=np.array([0.7]), qvel=np.array([0.1, 0, -0.3, 0, 0.2, 0, 1.0]))
    phased = jax.jit(lambda d: functools.reduce(lambda d, phase: phase[1](model, d), mjx_phases(), d))(data)
    stepped = jax.jit(lambda d: mjx.step(model, d))(data)
    assert int(np.sum(np.asarray(stepped._impl.contact.dist) < 0)) > 0  # the body touches the ground
    for field in ("qpos", "qvel", "qacc", "qfrc_constraint", "actuator_force"):
        np.testing.assert_array_equal(getattr(phased, field), getattr(stepped, field), err_msg=field)
