"""Validation of the swing-up envs against MuJoCo's C engine, physics and the paper's task definitions.

Tolerances below were measured on CPU (jax 0.9.2, brax 0.14.2, mujoco 4.0.0) and set with margin:
- env (generalized and mjx, float64) vs ``mujoco.mj_step`` over 1 s: max |error| of q and qd <= 1e-6
  (measured <= 8e-8 for generalized; the residue is Brax's 10-iteration approximate mass-matrix inverse);
- energy drift with zero control over 5 s (float32): <= 3 % of the swing-up energy
  (measured 1.4 % acrobot, 1.0 % cart-pole, 0.8 % double pendulum; MuJoCo's own Euler drifts the same);
- ``jax.grad`` of a 20-step return vs central differences (float64): relative error <= 1e-5
  (measured 3e-9 to 9e-9).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from brax import actuator
from brax.envs.base import State

from diffrl.envs import BACKENDS, TASKS, make_env, wrap_angle

TASK_NAMES = sorted(TASKS)

# The papers' actuation limits and control steps (PAPERS.md: CE-APG's task table; SHAC's cart-pole).
PAPER_GEAR = {"acrobot": 25.0, "cartpole_swingup": 100.0, "double_pendulum_swingup": 1000.0, "shac_cartpole": 1000.0}
PAPER_CONTROL_STEP = {
    "acrobot": 0.01,
    "cartpole_swingup": 0.04,
    "double_pendulum_swingup": 0.01,
    "shac_cartpole": 1 / 60,
}

MUJOCO_ATOL = 1e-6
ENERGY_DRIFT_FRACTION = 0.03
GRAD_RTOL = 1e-5


def start_state(env, q, qd) -> State:
    """An env state at a chosen (q, qd), for comparisons that must not depend on reset noise.

    Call it under ``jax.jit``: Brax's ``pipeline_init`` run op by op costs seconds.
    """
    pipeline_state = env.pipeline_init(jnp.asarray(q), jnp.asarray(qd))
    obs = env.task.observe(pipeline_state.q, pipeline_state.qd)
    return State(pipeline_state, obs, jnp.zeros(()), jnp.zeros(()), {})


def swinging_start(task, offset: float, velocity: float) -> tuple[np.ndarray, np.ndarray]:
    """Hanging down, hinges turned by ``offset`` and every joint moving at ``velocity``: a lively start."""
    q = np.asarray(task.hanging_q) + offset * np.asarray(task.angle_mask, dtype=float)
    return q, np.full(len(q), velocity)


@functools.partial(jax.jit, static_argnums=0)
def simulate(env, q0, qd0, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Steps the env from (q0, qd0) through ``actions`` [T, act]; returns the (q, qd) after each step."""

    def step(state, action):
        state = env.step(state, action)
        return state, (state.pipeline_state.q, state.pipeline_state.qd)

    _, (q, qd) = jax.lax.scan(step, start_state(env, q0, qd0), actions)
    return q, qd


def mujoco_model(task) -> tuple[mujoco.MjModel, mujoco.MjData]:
    model = mujoco.MjModel.from_xml_path(str(task.xml_path))
    return model, mujoco.MjData(model)


def mujoco_simulate(task, q0, qd0, actions) -> tuple[np.ndarray, np.ndarray]:
    """The reference: MuJoCo's C engine, ``substeps`` mj_step calls per control step."""
    model, data = mujoco_model(task)
    data.qpos[:], data.qvel[:] = q0, qd0
    qs, qds = [], []
    for action in actions:
        data.ctrl[:] = action
        for _ in range(task.substeps):
            mujoco.mj_step(model, data)
        qs.append(data.qpos.copy())
        qds.append(data.qvel.copy())
    return np.array(qs), np.array(qds)


def control_sequences(steps: int, action_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "zero": np.zeros((steps, action_size)),
        "constant": np.full((steps, action_size), 0.7),
        "random": rng.uniform(-1.0, 1.0, (steps, action_size)),
    }


# --- (a) agreement with MuJoCo's C engine -------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_mjcf_matches_paper_timing_and_actuation(name):
    task = TASKS[name]
    model, data = mujoco_model(task)
    # Brax's pipelines only implement (semi-implicit) Euler; MuJoCo must integrate the same way.
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert model.opt.timestep * task.substeps == pytest.approx(PAPER_CONTROL_STEP[name])
    np.testing.assert_allclose(model.actuator_gear[:, 0], PAPER_GEAR[name])

    # Joint force = action * gear, in MuJoCo and in Brax's actuator model alike; |action| <= 1.
    env = make_env(name)
    for action in (0.7, -0.3, 3.0):
        data.ctrl[:] = action
        mujoco.mj_forward(model, data)
        expected = np.clip(action, -1.0, 1.0) * PAPER_GEAR[name]
        np.testing.assert_allclose(data.qfrc_actuator[model.actuator_trnid[:, 0]], expected)
        q, qd = jnp.zeros(model.nq), jnp.zeros(model.nv)
        tau = actuator.to_tau(env.sys, jnp.full(model.nu, action), q, qd)
        np.testing.assert_allclose(np.asarray(tau), data.qfrc_actuator, rtol=1e-6)


@pytest.mark.parametrize("backend", ["generalized", "mjx"])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_matches_mujoco(name, backend):
    task = TASKS[name]
    with jax.enable_x64(True):
        env = make_env(name, backend)  # built inside the context so that the system is float64
        q0, qd0 = swinging_start(task, offset=0.3, velocity=0.2)
        steps = round(1.0 / float(env.dt))
        for label, actions in control_sequences(steps, env.action_size).items():
            q, qd = simulate(env, q0, qd0, jnp.asarray(actions))
            q_ref, qd_ref = mujoco_simulate(task, q0, qd0, actions)
            np.testing.assert_allclose(np.asarray(q), q_ref, rtol=0, atol=MUJOCO_ATOL, err_msg=f"q, {label}")
            np.testing.assert_allclose(np.asarray(qd), qd_ref, rtol=0, atol=MUJOCO_ATOL, err_msg=f"qd, {label}")


# --- (b) energy conservation ----------------------------------------------------------------------


def mujoco_energy(model, data, q, qd) -> float:
    """Kinetic + potential energy of one state, computed by MuJoCo (an oracle independent of Brax)."""
    data.qpos[:], data.qvel[:] = q, qd
    mujoco.mj_forward(model, data)
    return float(np.sum(data.energy))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_energy_drift_with_zero_control(name):
    task = TASKS[name]
    env = make_env(name)
    model, data = mujoco_model(task)
    model.opt.enableflags |= mujoco.mjtEnableBit.mjENBL_ENERGY

    q0, qd0 = swinging_start(task, offset=1.0, velocity=1.0)
    steps = round(5.0 / float(env.dt))
    q, qd = simulate(env, q0, qd0, jnp.zeros((steps, env.action_size)))

    energy0 = mujoco_energy(model, data, q0, qd0)
    energies = np.array(
        [mujoco_energy(model, data, qi, qdi) for qi, qdi in zip(np.asarray(q), np.asarray(qd), strict=True)]
    )
    # Scale: the energy a swing-up must inject (upright at rest minus hanging at rest).
    rest = np.zeros(model.nv)
    hanging = np.asarray(task.hanging_q)
    upright = np.where(task.angle_mask, 0.0, hanging)
    swing_energy = mujoco_energy(model, data, upright, rest) - mujoco_energy(model, data, hanging, rest)
    drift = np.max(np.abs(energies - energy0)) / swing_energy
    assert drift < ENERGY_DRIFT_FRACTION, f"energy drifted by {drift:.2%} of the swing-up energy"


# --- (c) rewards at known states --------------------------------------------------------------------


HANGING_REWARD = {
    "acrobot": 10.0 - np.pi**2,
    "cartpole_swingup": -(np.pi**2),
    "double_pendulum_swingup": 10.0 - np.pi**2,
    "shac_cartpole": -(np.pi**2),
}
UPRIGHT_REWARD = {"acrobot": 10.0, "cartpole_swingup": 0.0, "double_pendulum_swingup": 10.0, "shac_cartpole": 0.0}


def _reward(task, q, qd=None) -> float:
    q = jnp.asarray(q, dtype=jnp.float32)
    qd = jnp.zeros_like(q) if qd is None else jnp.asarray(qd, dtype=jnp.float32)
    return float(task.reward(q, qd))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reward_hanging_and_upright(name):
    task = TASKS[name]
    upright = np.where(task.angle_mask, 0.0, task.hanging_q)
    assert _reward(task, task.hanging_q) == pytest.approx(HANGING_REWARD[name], abs=1e-5)
    assert _reward(task, upright) == pytest.approx(UPRIGHT_REWARD[name], abs=1e-6)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reward_wraps_angles(name):
    task = TASKS[name]
    base = np.where(task.angle_mask, 0.1, 0.0)
    for turns in (-2, 1, 3):
        turned = base + np.where(task.angle_mask, 2 * np.pi * turns, 0.0)
        assert _reward(task, turned) == pytest.approx(_reward(task, base), abs=1e-4)
    # Hanging at -pi is the same state as +pi.
    assert _reward(task, -np.asarray(task.hanging_q)) == pytest.approx(_reward(task, task.hanging_q), abs=1e-5)


def test_reward_formulas_off_the_special_states():
    """The paper's per-step rewards at an arbitrary state, written out by hand."""
    q, qd = np.array([0.5, 2 * np.pi - 0.2]), np.array([1.0, -2.0])
    assert _reward(TASKS["acrobot"], q, qd) == pytest.approx(10 - 0.25 - 0.04 - 0.01 * 5, abs=1e-5)
    q, qd = np.array([0.3, 0.5, -0.4]), np.array([9.0, 1.0, 2.0])  # cart speed is not penalised
    expected = 10 - 0.25 - 0.16 - 0.09 - 0.01 * 5
    assert _reward(TASKS["double_pendulum_swingup"], q, qd) == pytest.approx(expected, abs=1e-5)
    assert _reward(TASKS["cartpole_swingup"], [5.0, 0.5], [3.0, 3.0]) == pytest.approx(-0.25, abs=1e-6)


def test_wrap_angle_range():
    angles = jnp.array([-np.pi, np.pi, 3 * np.pi, -3 * np.pi + 0.1, 0.0])
    np.testing.assert_allclose(np.asarray(wrap_angle(angles)), [np.pi, np.pi, np.pi, -np.pi + 0.1, 0.0], atol=1e-5)


# --- (d) analytic gradient vs finite differences ------------------------------------------------------


# One task in the fast suite: each compiles a vmapped float64 gradient through Brax's pipeline (~20 s);
# the closed-form backend's gradient is checked on every task in test_analytic.py.
@pytest.mark.parametrize("name", [n if n == "acrobot" else pytest.param(n, marks=pytest.mark.slow) for n in TASK_NAMES])
def test_grad_of_return_matches_finite_differences(name, steps=20, eps=1e-6):
    with jax.enable_x64(True):
        env = make_env(name)
        q0, qd0 = swinging_start(env.task, offset=0.5, velocity=0.3)

        def episode_return(actions):
            def step(state, action):
                state = env.step(state, action)
                return state, state.reward

            return jnp.sum(jax.lax.scan(step, start_state(env, q0, qd0), actions)[1])

        @jax.jit
        def grad_and_finite_differences(actions):
            # All 2 * T * act probes of the central differences in one batched call.
            basis = jnp.eye(actions.size).reshape(-1, *actions.shape) * eps
            plus, minus = jnp.split(jax.vmap(episode_return)(jnp.concatenate([actions + basis, actions - basis])), 2)
            return jax.grad(episode_return)(actions).ravel(), (plus - minus) / (2 * eps)

        # Inside (-1, 1) so that the action clip is smooth around every probe.
        actions = jax.random.uniform(jax.random.PRNGKey(1), (steps, env.action_size), minval=-0.5, maxval=0.5)
        grad, finite_diff = map(np.asarray, grad_and_finite_differences(actions))
        relative_error = np.linalg.norm(grad - finite_diff) / np.linalg.norm(finite_diff)
        assert relative_error < GRAD_RTOL, f"relative error {relative_error:.1e}"


# --- (e) reset and registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reset_hangs_down_with_small_noise(name):
    env = make_env(name)
    task = env.task
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 256))
    q, qd = np.asarray(states.pipeline_state.q), np.asarray(states.pipeline_state.qd)

    noise = q - np.asarray(task.hanging_q)
    noised = np.asarray(task.reset_noise_mask or task.angle_mask)  # the CE-APG tasks: the hinges only
    velocity_noise = task.reset_noise if task.reset_velocity_noise is None else task.reset_velocity_noise
    assert np.all(np.abs(noise) <= task.reset_noise + 1e-6)
    assert np.all(noise[:, ~noised] == 0.0), "the cart starts exactly at x = 0"
    assert np.all(np.abs(qd) <= velocity_noise + 1e-6)
    assert np.std(noise[:, noised]) > task.reset_noise / 10, "angles are noised"
    assert np.std(qd) > velocity_noise / 10, "velocities are noised"

    assert states.obs.shape == (256, env.observation_size)
    np.testing.assert_allclose(np.asarray(states.reward), 0.0)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_step_reports_observation_and_reward_of_the_new_state(name):
    env = make_env(name)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    after = jax.jit(env.step)(state, jnp.ones(env.action_size))
    q, qd = after.pipeline_state.q, after.pipeline_state.qd
    assert after.obs.shape == (env.observation_size,)
    assert not np.allclose(np.asarray(q), np.asarray(state.pipeline_state.q)), "the full-force step moved"
    np.testing.assert_allclose(np.asarray(after.obs), np.asarray(env.task.observe(q, qd)), atol=1e-6)
    np.testing.assert_allclose(float(after.reward), float(env.task.reward(q, qd)), atol=1e-5)


def test_make_env_rejects_unknown_names():
    with pytest.raises(ValueError) as unknown_env:
        make_env("nope")
    assert all(name in str(unknown_env.value) for name in TASKS)

    with pytest.raises(ValueError) as unknown_backend:
        make_env("acrobot", "nope")
    assert all(backend in str(unknown_backend.value) for backend in BACKENDS)
