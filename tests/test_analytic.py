"""The closed-form backend against MuJoCo's C engine, against Brax, and against itself (energy, gradients).

Reference comparisons run in float64 (scoped with ``jax.enable_x64``, so other tests keep float32) from
a start well away from the hanging equilibrium, for zero, constant and random controls over one
simulated second.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from diffrl.envs import BACKENDS, TASKS, AnalyticSwingUpEnv, make_env
from diffrl.envs.analytic import PlanarChain, PlanarState, acceleration, energy, mass_matrix, simulate
from diffrl.envs.swingup import SwingUpEnv
from diffrl.networks import make_gru_policy
from diffrl.rollout import episode_return

TASK_NAMES = sorted(TASKS)
CONTROLS = ("zero", "constant", "random")
MUJOCO_INTEGRATORS = {
    "semi_implicit": mujoco.mjtIntegrator.mjINT_EULER,
    "rk4": mujoco.mjtIntegrator.mjINT_RK4,
}


def _start(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A state well away from equilibrium: hinges 0.4/-0.3 rad off hanging, velocities of 0.5."""
    task = TASKS[name]
    n = len(task.hanging_q)
    q = np.asarray(task.hanging_q) + np.asarray(task.angle_mask) * np.array([0.4, -0.3, 0.2][:n])
    qd = np.array([0.5, -0.5, 0.5][:n])
    return q, qd


def _actions(kind: str, steps: int) -> np.ndarray:
    if kind == "zero":
        return np.zeros((steps, 1))
    if kind == "constant":
        return np.full((steps, 1), 0.5)
    return np.random.default_rng(0).uniform(-1.0, 1.0, (steps, 1))


def _mujoco_rollout(name: str, integrator: str, q0, qd0, actions) -> tuple[np.ndarray, np.ndarray]:
    """MuJoCo's C engine, control held over each control step's substeps; (q, qd) after each control step."""
    model = mujoco.MjModel.from_xml_string(TASKS[name].xml)
    model.opt.integrator = MUJOCO_INTEGRATORS[integrator]
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = q0, qd0
    qs, qds = [], []
    for action in actions:
        data.ctrl[:] = action
        for _ in range(TASKS[name].substeps):
            mujoco.mj_step(model, data)
        qs.append(data.qpos.copy())
        qds.append(data.qvel.copy())
    return np.array(qs), np.array(qds)


@functools.lru_cache
def _jitted_rollout(env):
    """(start state, actions [T, 1]) -> (q [T, n], qd [T, n]) through env.step, compiled once per env."""

    def run(start, actions):
        def step(state, action):
            state = env.step(state, action)
            return state, (state.pipeline_state.q, state.pipeline_state.qd)

        return jax.lax.scan(step, start, actions)[1]

    return jax.jit(run)


def _env_rollout(env, q0, qd0, actions):
    start = env.reset(jax.random.PRNGKey(0))
    q0, qd0 = jnp.asarray(q0), jnp.asarray(qd0)
    physics = env.pipeline_init(q0, qd0) if isinstance(env, SwingUpEnv) else PlanarState(q0, qd0)
    q, qd = _jitted_rollout(env)(start.replace(pipeline_state=physics), jnp.asarray(actions))
    return np.asarray(q), np.asarray(qd)


@functools.lru_cache
def _analytic_env(name: str, integrator: str = "semi_implicit") -> AnalyticSwingUpEnv:
    return AnalyticSwingUpEnv(TASKS[name], integrator=integrator)


@functools.lru_cache
def _brax_env(name: str, backend: str) -> SwingUpEnv:
    return SwingUpEnv(TASKS[name], backend=backend)


# --- the model itself ---


@pytest.mark.parametrize("name", TASK_NAMES)
def test_mass_matrix_and_acceleration_match_mujoco(name):
    model = mujoco.MjModel.from_xml_string(TASKS[name].xml)
    data = mujoco.MjData(model)
    chain = PlanarChain.from_mujoco(model)
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for _ in range(5):
            data.qpos[:], data.qvel[:] = rng.uniform(-np.pi, np.pi, model.nq), rng.normal(size=model.nv)
            data.ctrl[:] = rng.uniform(-1, 1, model.nu)
            mujoco.mj_forward(model, data)
            full = np.zeros((model.nv, model.nv))
            mujoco.mj_fullM(model, data, full)
            q, qd = jnp.asarray(data.qpos), jnp.asarray(data.qvel)
            tau = jnp.asarray(chain.actuation @ data.ctrl)
            np.testing.assert_allclose(mass_matrix(chain, q), full, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(acceleration(chain, q, qd, tau), data.qacc, rtol=1e-10, atol=1e-10)


def test_parameters_are_read_from_the_mjcf():
    """Editing the MJCF changes the closed form: there is no second copy of the physics to drift."""
    xml = TASKS["acrobot"].xml.replace('mass="2.5"', 'mass="3.0"', 1)
    chain = PlanarChain.from_mjcf(xml)
    np.testing.assert_allclose(chain.mass, [3.0, 2.5])
    np.testing.assert_allclose(chain.actuation, [[0.0], [25.0]])
    assert chain.timestep == 0.0025 and chain.gravity == 9.81


def test_refuses_what_it_does_not_model():
    with pytest.raises(ValueError, match="damping"):
        PlanarChain.from_mjcf(TASKS["acrobot"].xml.replace('damping="0"', 'damping="0.1"'))
    with pytest.raises(ValueError, match="hinge 0 must turn about y"):
        PlanarChain.from_mjcf(TASKS["acrobot"].xml.replace('axis="0 1 0"', 'axis="1 0 0"'))


# --- the system the CE-APG authors simulated, as an independent model written here ---
#
# Their Brax 0.0.10 configs (sgillen/brax: brax/envs/acrobot.py, inverted_pendulum_swingup.py,
# inverted_double_pendulum_swingup.py) set masses and offsets and no inertia, so every link and pole had
# Brax's default I = 1 kg m^2 about its centre of mass (shared/PAPERS.md). Below: the textbook rigid-body
# equations of each system with those constants, in NumPy float64, stepped by semi-implicit Euler (velocity
# first) with the task's substeps; angles from upright, a vector at angle a points along (sin a, cos a) in
# (x, z). Nothing here reads the MJCF or diffrl's closed form.

G = 9.81
AUTHORS_INERTIA = 1.0


def _acrobot_accel(q, qd, u):
    """Fixed base, link 1 at absolute angle q1, link 2 at q1 + q2; elbow torque 25 u."""
    m, l1, lc, inertia = 2.5, 0.9, 0.45, AUTHORS_INERTIA
    c2, s2 = np.cos(q[1]), np.sin(q[1])
    m11 = 2 * inertia + m * lc**2 + m * (l1**2 + lc**2 + 2 * l1 * lc * c2)
    m12 = inertia + m * (lc**2 + l1 * lc * c2)
    m22 = inertia + m * lc**2
    h = -m * l1 * lc * s2
    coriolis = np.array([h * (2 * qd[0] * qd[1] + qd[1] ** 2), -h * qd[0] ** 2])
    gravity = -G * np.array(
        [(m * lc + m * l1) * np.sin(q[0]) + m * lc * np.sin(q[0] + q[1]), m * lc * np.sin(q[0] + q[1])]
    )
    return np.linalg.solve([[m11, m12], [m12, m22]], np.array([0.0, 25.0 * u]) - coriolis - gravity)


def _cartpole_accel(q, qd, u):
    """Cart at x (10.471975 kg), pole at theta (5.0185914 kg, centre of mass 0.3 m from the pivot); 100 u N."""
    mc, m, lc, inertia = 10.471975, 5.0185914, 0.3, AUTHORS_INERTIA
    c, s = np.cos(q[1]), np.sin(q[1])
    mass = [[mc + m, m * lc * c], [m * lc * c, inertia + m * lc**2]]
    coriolis = np.array([-m * lc * s * qd[1] ** 2, 0.0])
    gravity = np.array([0.0, -G * m * lc * s])
    return np.linalg.solve(mass, np.array([100.0 * u, 0.0]) - coriolis - gravity)


def _double_pendulum_accel(q, qd, u):
    """Cart at x, pole 1 at phi1 = theta1, pole 2 at phi2 = theta1 + theta2 (pivots 0.6 m apart, centres of mass
    0.3 m above each pivot); the equations in (x, phi1, phi2), mapped back to the relative joint angle."""
    mc, m, l1, lc, inertia = 10.471975, 5.0185914, 0.6, 0.3, AUTHORS_INERTIA
    phi1, phi2 = q[1], q[1] + q[2]
    w1, w2 = qd[1], qd[1] + qd[2]
    k = m * l1 * lc
    first = m * lc + m * l1  # pole 1's own moment arm plus pole 2's mass carried at pole 1's tip
    mass = [
        [mc + 2 * m, first * np.cos(phi1), m * lc * np.cos(phi2)],
        [first * np.cos(phi1), inertia + m * lc**2 + m * l1**2, k * np.cos(phi1 - phi2)],
        [m * lc * np.cos(phi2), k * np.cos(phi1 - phi2), inertia + m * lc**2],
    ]
    coriolis = np.array(
        [
            -first * np.sin(phi1) * w1**2 - m * lc * np.sin(phi2) * w2**2,
            k * np.sin(phi1 - phi2) * w2**2,
            -k * np.sin(phi1 - phi2) * w1**2,
        ]
    )
    gravity = -G * np.array([0.0, first * np.sin(phi1), m * lc * np.sin(phi2)])
    x_acc, phi1_acc, phi2_acc = np.linalg.solve(mass, np.array([1000.0 * u, 0.0, 0.0]) - coriolis - gravity)
    return np.array([x_acc, phi1_acc, phi2_acc - phi1_acc])


def _wrap(angle):
    return np.angle(np.exp(1j * angle))  # (-pi, pi]


# name: (accelerations, substeps, timestep, observation, a swinging state (q, qd))
AUTHORS_SYSTEMS = {
    "acrobot": (
        _acrobot_accel, 4, 0.0025,
        lambda q, qd: np.concatenate([_wrap(q), qd]),
        ([np.pi - 0.2, 0.5], [2.0, -3.0]),  # link 1 swings through hanging-down (+-pi)
    ),
    "cartpole_swingup": (
        _cartpole_accel, 8, 0.005,
        lambda q, qd: np.array([q[0], _wrap(q[1]), qd[0], qd[1]]),
        ([0.3, np.pi - 0.2], [1.0, 2.5]),  # the pole swings through hanging-down (+-pi)
    ),
    "double_pendulum_swingup": (
        _double_pendulum_accel, 12, 1 / 1200,
        lambda q, qd: np.concatenate([q[:1], np.sin(q[1:]), np.cos(q[1:]), qd]),
        ([0.3, np.pi - 0.8, 0.5], [1.0, 2.5, -3.0]),
    ),
}  # fmt: skip
SATURATED = np.array([1.7, 1.7, -2.0, -2.0, -2.0] * 4)[:, None]  # 20 control steps, clipped to +-1 by the env


def _authors_rollout(name: str, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    accel, substeps, dt, observe, (q, qd) = AUTHORS_SYSTEMS[name]
    q, qd = np.array(q, float), np.array(qd, float)
    qs, qds, observations = [], [], []
    for (action,) in actions:
        u = np.clip(action, -1.0, 1.0)
        for _ in range(substeps):
            qd = qd + dt * accel(q, qd, u)
            q = q + dt * qd
        qs.append(q), qds.append(qd), observations.append(observe(q, qd))
    return np.array(qs), np.array(qds), np.array(observations)


def _observed_rollout(env, q0, qd0, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, qd, observation) after each control step of ``env.step``."""
    start = env.reset(jax.random.PRNGKey(0)).replace(pipeline_state=PlanarState(jnp.asarray(q0), jnp.asarray(qd0)))

    def step(state, action):
        state = env.step(state, action)
        return state, (state.pipeline_state.q, state.pipeline_state.qd, state.obs)

    return tuple(np.asarray(x) for x in jax.jit(lambda s, a: jax.lax.scan(step, s, a)[1])(start, jnp.asarray(actions)))


@pytest.mark.parametrize("name", list(AUTHORS_SYSTEMS))
def test_tasks_are_the_systems_the_authors_simulated(name):
    """20 saturated-force steps from a swinging state: diffrl's task (closed form, float64) follows the
    independent model of the authors' system to 1e-6 in state and observation. The same task with the
    capsules' own inertia (``env.inertia=geometric``, diffrl's bodies before) is far off: the check has teeth."""
    q_ref, qd_ref, obs_ref = _authors_rollout(name, SATURATED)
    q0, qd0 = (np.asarray(x, float) for x in AUTHORS_SYSTEMS[name][4])
    with jax.enable_x64(True):
        q, qd, obs = _observed_rollout(make_env(name, "analytic"), q0, qd0, SATURATED)
        q_geo, qd_geo, _ = _observed_rollout(make_env(name, "analytic", inertia="geometric"), q0, qd0, SATURATED)
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(qd, qd_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(obs, obs_ref, rtol=0, atol=1e-6)
    assert np.max(np.abs(qd_geo - qd_ref)) > 0.1, name


@pytest.mark.parametrize("name", list(AUTHORS_SYSTEMS))
def test_every_pipeline_reads_the_authors_inertia(name):
    """Brax builds every pipeline's system (generalized, mjx, spring, positional) from the same
    ``mjcf.loads``: each moving body has 1 kg m^2 about every axis, the masses are the authors'."""
    from brax.io import mjcf

    sys = mjcf.loads(TASKS[name].xml)
    np.testing.assert_allclose(np.asarray(sys.link.inertia.i), np.broadcast_to(np.eye(3), (sys.num_links(), 3, 3)))
    expected = {"acrobot": [2.5, 2.5], "cartpole_swingup": [10.471975, 5.0185914]}
    masses = expected.get(name, [10.471975, 5.0185914, 5.0185914])
    np.testing.assert_allclose(np.asarray(sys.link.inertia.mass), masses, rtol=1e-7)


# --- trajectories against MuJoCo's C engine and against Brax ---


@pytest.mark.parametrize("integrator", ["semi_implicit", "rk4"])
@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("name", TASK_NAMES)
def test_matches_mujoco_over_one_second(name, control, integrator):
    """Same MJCF, same integrator: float64 agreement to 1e-9 (measured: ~1e-14) over 1 s."""
    q0, qd0 = _start(name)
    with jax.enable_x64(True):
        env = _analytic_env(name, integrator)
        actions = _actions(control, round(1.0 / env.dt))
        q, qd = _env_rollout(env, q0, qd0, actions)
    q_ref, qd_ref = _mujoco_rollout(name, integrator, q0, qd0, actions)
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(qd, qd_ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("name", TASK_NAMES)
def test_matches_brax_generalized_in_float64(name, control):
    """Brax keeps the model's parameters in float32, so even in float64 the backends differ at ~1e-8
    (measured up to 1e-7 on velocities of ~20 rad/s); 1e-6 leaves headroom."""
    q0, qd0 = _start(name)
    with jax.enable_x64(True):
        analytic, brax_env = _analytic_env(name), _brax_env(name, "generalized")
        actions = _actions(control, round(1.0 / analytic.dt))
        q, qd = _env_rollout(analytic, q0, qd0, actions)
        q_ref, qd_ref = _env_rollout(brax_env, q0, qd0, actions)
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(qd, qd_ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["generalized", pytest.param("mjx", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_matches_brax_in_float32(name, backend):
    """What training runs: float32, random controls. Round-off grows to ~1e-5 of the state in 1 s
    (measured up to 6e-5 on ~20 rad/s velocities); the tolerance is 5e-4 absolute."""
    q0, qd0 = _start(name)
    analytic, brax_env = _analytic_env(name), _brax_env(name, backend)
    actions = _actions("random", round(1.0 / analytic.dt)).astype(np.float32)
    q, qd = _env_rollout(analytic, q0.astype(np.float32), qd0.astype(np.float32), actions)
    q_ref, qd_ref = _env_rollout(brax_env, q0.astype(np.float32), qd0.astype(np.float32), actions)
    np.testing.assert_allclose(q, q_ref, rtol=0, atol=5e-4)
    np.testing.assert_allclose(qd, qd_ref, rtol=0, atol=5e-4)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reset_and_observations_match_brax(name):
    """One key, one start state on both backends: same rng splitting, same noise, same observation."""
    analytic, brax_env = AnalyticSwingUpEnv(TASKS[name]), SwingUpEnv(TASKS[name])
    for seed in range(3):
        a, b = analytic.reset(jax.random.PRNGKey(seed)), brax_env.reset(jax.random.PRNGKey(seed))
        np.testing.assert_array_equal(a.pipeline_state.q, b.pipeline_state.q)
        np.testing.assert_array_equal(a.pipeline_state.qd, b.pipeline_state.qd)
        np.testing.assert_array_equal(a.obs, b.obs)
        assert float(a.reward) == float(b.reward) == 0.0 and float(a.done) == 0.0
    assert analytic.observation_size == brax_env.observation_size
    assert analytic.action_size == brax_env.action_size
    assert analytic.dt == pytest.approx(float(brax_env.dt))


# --- energy and gradients ---

# Max |energy drift| over 5 s with zero control, from hinges 1.5 rad off hanging (a violent swing), as a
# fraction of the potential-energy range (upright minus hanging). Measured: semi-implicit Euler 1.6e-2
# (double pendulum) to 6.7e-2 (acrobot), O(dt); RK4 4e-9 to 1.4e-7. See docs/analytic.md.
ENERGY_BOUNDS = {"semi_implicit": 0.1, "rk4": 1e-6}


@pytest.mark.parametrize("integrator", ["semi_implicit", "rk4"])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_energy_drift_over_five_seconds(name, integrator):
    drift, scale = energy_drift(name, integrator, seconds=5.0)
    assert drift / scale < ENERGY_BOUNDS[integrator], f"{name} {integrator}: |dE| {drift:.3g} J of {scale:.3g} J"


def energy_drift(name: str, integrator: str, seconds: float) -> tuple[float, float]:
    """(max |E(t) - E(0)| over ``seconds`` with zero control, potential-energy range upright-hanging)."""
    task = TASKS[name]
    with jax.enable_x64(True):
        chain = PlanarChain.from_mjcf(task.xml)
        hanging = jnp.asarray(task.hanging_q, float)
        q0 = hanging + 1.5 * jnp.asarray(task.angle_mask, float)
        zero = jnp.zeros_like(hanging)

        def step(state, _):
            q, qd = simulate(chain, *state, jnp.zeros(1), 1, integrator)
            return (q, qd), energy(chain, q, qd)

        run = jax.jit(lambda q: jax.lax.scan(step, (q, zero), None, length=round(seconds / chain.timestep))[1])
        drift = float(jnp.max(jnp.abs(run(q0) - energy(chain, q0, zero))))
        scale = float(energy(chain, jnp.zeros_like(hanging), zero) - energy(chain, hanging, zero))
    return drift, scale


@pytest.mark.parametrize("integrator", ["semi_implicit", pytest.param("rk4", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_return_gradient_matches_finite_differences(name, integrator):
    """jax.grad of a 20-step return of the paper's GRU policy vs a central difference along a random
    direction in parameter space, in float64."""
    with jax.enable_x64(True):
        env = _analytic_env(name, integrator)
        policy = make_gru_policy(env.observation_size, env.action_size)
        # flax initialises float32 parameters even under x64; a float32 return would drown the differences.
        params = jax.tree.map(lambda x: x.astype(jnp.float64), policy.init(jax.random.PRNGKey(0)))
        normalizer = policy.init_normalizer()
        q0, qd0 = _start(name)
        start = env.reset(jax.random.PRNGKey(0)).replace(pipeline_state=PlanarState(jnp.asarray(q0), jnp.asarray(qd0)))
        ret = jax.jit(lambda p: episode_return(env, policy, p, normalizer, start, 20))

        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        direction = jax.tree.unflatten(
            treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
        )
        shifted = lambda eps: jax.tree.map(lambda p, d: p + eps * d, params, direction)
        eps = 1e-6
        finite_difference = (ret(shifted(eps)) - ret(shifted(-eps))) / (2 * eps)
        grad = jax.grad(ret)(params)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True))
    assert abs(float(finite_difference)) > 1e-3  # the check means something
    np.testing.assert_allclose(float(analytic), float(finite_difference), rtol=1e-6)


# --- the registry and the rest of diffrl ---


def test_make_env_builds_the_analytic_backend():
    assert "analytic" in BACKENDS
    env = make_env("acrobot", "analytic")
    assert isinstance(env, AnalyticSwingUpEnv) and env.backend == "analytic" and env.integrator == "semi_implicit"
    with pytest.raises(ValueError, match="analytic"):
        make_env("acrobot", "no_such_backend")


def test_batched_policy_rollout_runs_in_float32():
    env = make_env("double_pendulum_swingup", "analytic")
    policy = make_gru_policy(env.observation_size, env.action_size)
    params, normalizer = policy.init(jax.random.PRNGKey(0)), policy.init_normalizer()
    starts = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 4))
    loss = lambda p: jnp.mean(jax.vmap(lambda s: episode_return(env, policy, p, normalizer, s, 10))(starts))
    value, grad = jax.jit(jax.value_and_grad(loss))(params)
    assert value.dtype == jnp.float32 and np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grad))


def test_env_inertia_picks_the_bodies_from_the_config():
    """`env.inertia` reaches the env a run builds: the authors' 1 kg m^2 by default, the capsules' on request."""
    from diffrl.experiment import build_env

    from conftest import compose_train

    np.testing.assert_allclose(build_env(compose_train()).chain.inertia_yy, [1.0, 1.0])
    geometric = build_env(compose_train("env.inertia=geometric")).chain.inertia_yy
    np.testing.assert_allclose(geometric, [0.19675686, 0.19675686], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown inertia 'nope'; valid choices: authors, geometric"):
        build_env(compose_train("env.inertia=nope"))
