"""SHAC's tasks (docs/shac_tasks.md): registry and configs, the authors' observations, rewards and
terminations checked by hand on constructed states (no physics compile), the cart-pole's reset, the
experiment that sweeps them, and (slow) SHAC end to end on the MJX ant."""

import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.envs import REGISTRY, TASKS, make_env
from diffrl.envs.shac_locomotion import ShacAnt, ShacCheetah, ShacHopper, ShacHumanoid, torso_observation
from diffrl.experiment import algorithm_options
from diffrl.paper_results import SHAC_TASKS
from diffrl.tables import paper_text

from conftest import compose_train, compose_with_hydra, run_diffrl


def fake_state(q, qd, pos=(0.0, 0.0, 0.5), rot=(1.0, 0.0, 0.0, 0.0), vel=(0.0, 0.0, 0.0), ang=(0.0, 0.0, 0.0)):
    """The fields of a Brax pipeline state the tasks read, for a torso (body 0) and joints."""
    transform = types.SimpleNamespace(pos=jnp.asarray([pos]), rot=jnp.asarray([rot]))
    motion = types.SimpleNamespace(vel=jnp.asarray([vel]), ang=jnp.asarray([ang]))
    return types.SimpleNamespace(x=transform, xd=motion, q=jnp.asarray(q), qd=jnp.asarray(qd))


@pytest.mark.parametrize("task", SHAC_TASKS)
def test_every_shac_task_is_registered_with_its_config_and_observation_size(task):
    cfg = compose_train(f"env={task}", "algo=shac")
    assert cfg.env.name == task and task in REGISTRY
    env = make_env(task, cfg.env.backend)
    traced = jax.eval_shape(env.reset, jax.random.PRNGKey(0))  # traces the real reset, compiles nothing
    assert traced.obs.shape == (env.observation_size,)
    expected = {"shac_cartpole": 5, "shac_ant": 37, "shac_hopper": 11, "shac_cheetah": 17, "shac_humanoid": 76}
    assert env.observation_size == expected[task]
    actions = {"shac_cartpole": 1, "shac_ant": 8, "shac_hopper": 3, "shac_cheetah": 6, "shac_humanoid": 21}
    assert env.action_size == actions[task]  # the authors' num_act
    assert env.dt == pytest.approx(1 / 60)
    assert cfg.env.episode_length == (240 if task == "shac_cartpole" else 1000)


def test_the_ant_observation_has_the_authors_layout():
    """Height, quaternion, velocities, joints, 0.1 x joint velocities, up_z, heading to +x, last action."""
    yaw = 0.3  # turned left by 0.3 rad about z: heading towards +x is cos(0.3), still upright
    rot = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
    q = jnp.concatenate([jnp.array([0.0, 0.0, 0.6, *rot]), jnp.arange(8.0)])
    qd = jnp.concatenate([jnp.zeros(6), 10.0 * jnp.ones(8)])
    state = fake_state(q, qd, pos=(0.0, 0.0, 0.6), rot=rot, vel=(1.5, 0.0, 0.0), ang=(0.0, 0.0, 0.2))
    obs = torso_observation(state, last_action=-jnp.ones(8))
    assert obs.shape == (37,)
    np.testing.assert_allclose(obs[0], 0.6)
    np.testing.assert_allclose(obs[1:5], rot, atol=1e-7)
    np.testing.assert_allclose(obs[5:8], [1.5, 0, 0])
    np.testing.assert_allclose(obs[8:11], [0, 0, 0.2])
    np.testing.assert_allclose(obs[11:19], np.arange(8.0))
    np.testing.assert_allclose(obs[19:27], 1.0)
    np.testing.assert_allclose(obs[27], 1.0, atol=1e-6)  # up_z
    np.testing.assert_allclose(obs[28], math.cos(yaw), atol=1e-6)
    np.testing.assert_allclose(obs[29:], -1.0)


def test_the_ant_reward_and_termination_are_the_authors():
    env = ShacAnt.__new__(ShacAnt)  # reward and termination read only the observation
    obs = jnp.zeros(37).at[0].set(0.5).at[5].set(2.0).at[27].set(0.9).at[28].set(0.7)
    np.testing.assert_allclose(env.reward(obs, jnp.ones(8)), 2.0 + 0.09 + 0.7 + (0.5 - 0.27), rtol=1e-6)
    assert not env.terminated(obs) and env.terminated(obs.at[0].set(0.26))


def test_the_hopper_reward_shapes_height_and_angle_and_ends_below_the_start():
    env = ShacHopper.__new__(ShacHopper)
    action = jnp.array([1.0, -1.0, 0.5])  # |a|^2 = 2.25
    above = jnp.zeros(11).at[0].set(0.1).at[1].set(0.2).at[5].set(1.3)  # z 0.1: d = clip(0.4) = 0.3
    expected = 1.3 + 0.3 + (1 - 0.2**2 / (math.pi / 6) ** 2) - 0.225
    np.testing.assert_allclose(env.reward(above, action), expected, rtol=1e-6)
    below = above.at[0].set(-0.4)  # d = -0.1: -200 d^2 = -2
    np.testing.assert_allclose(env.reward(below, action), expected - 0.3 - 2.0, atol=1e-6)
    assert not env.terminated(below) and env.terminated(below.at[0].set(-0.46))


def test_the_cheetah_pays_forward_speed_minus_effort_and_never_ends():
    env = ShacCheetah.__new__(ShacCheetah)
    obs = jnp.zeros(17).at[8].set(3.0)
    np.testing.assert_allclose(env.reward(obs, jnp.ones(6)), 3.0 - 0.6, rtol=1e-6)
    assert not env.terminated(obs.at[0].set(-5.0))
    assert not env.episode_ends(obs.at[0].set(-5.0)) and env.episode_ends(obs.at[3].set(jnp.nan))


@pytest.mark.parametrize("env_class", [ShacHopper, ShacCheetah])
def test_a_planar_walker_observes_the_authors_joint_q_after_root_x_then_every_velocity(env_class):
    env = env_class.__new__(env_class)
    q, qd = jnp.arange(1.0, 1.0 + (env.observation_size + 1) // 2), -jnp.arange((env.observation_size + 1) // 2)
    obs = env.observe(types.SimpleNamespace(q=q, qd=qd), last_action=None)
    np.testing.assert_array_equal(obs, jnp.concatenate([q[1:], qd]))  # root x left out; its velocity kept


def test_the_humanoid_reward_reads_up_and_heading_after_its_21_joints():
    env = make_env("shac_humanoid", "mjx")  # builds the system (the authors' 21 joints), compiles nothing
    assert isinstance(env, ShacHumanoid) and env.action_size == 21
    obs = jnp.zeros(76).at[0].set(1.0).at[5].set(1.0).at[53].set(1.0).at[54].set(0.5)
    # height 1.0: d = clip(0.16, max 0.1) = 0.1, paid 10 d = 1
    np.testing.assert_allclose(env.reward(obs, jnp.zeros(21)), 1.0 + 0.1 + 0.5 + 1.0, rtol=1e-6)
    low = obs.at[0].set(0.8)  # d = -0.04: -200 d^2 = -0.32
    np.testing.assert_allclose(env.reward(low, jnp.ones(21)), 1.0 + 0.1 + 0.5 - 0.32 - 0.042, rtol=1e-5)
    assert not env.terminated(low) and env.terminated(low.at[0].set(0.7))
    terms = env.reward_terms(low, jnp.ones(21))  # what benchmarks/reward_terms.py splits a return into
    np.testing.assert_allclose(
        [terms[k] for k in ("forward_velocity", "up", "heading", "height", "action")],
        [1.0, 0.1, 0.5, -0.32, -0.042],
        rtol=1e-5,
    )


def test_the_cartpole_starts_hanging_with_the_authors_noise_and_pays_their_cost():
    task = TASKS["shac_cartpole"]
    q, qd = jax.vmap(task.start_joints)(jax.random.split(jax.random.PRNGKey(0), 4096))
    # U(+-pi/2) on the cart's position and the pole's angle around (0, -pi); U(+-0.25) on both velocities
    assert np.all(np.abs(q[:, 0]) <= math.pi / 2) and np.abs(q[:, 0]).max() > 1.5
    assert np.all(np.abs(q[:, 1] + math.pi) <= math.pi / 2) and np.abs(q[:, 1] + math.pi).max() > 1.5
    assert np.all(np.abs(qd) <= 0.25) and np.abs(qd).max() > 0.24
    obs = task.observe(jnp.array([0.5, -math.pi]), jnp.array([0.1, 2.0]))
    np.testing.assert_allclose(obs, [0.5, 0.1, 0.0, -1.0, 2.0], atol=1e-6)
    reward = task.reward(jnp.array([0.5, 1.5 * math.pi]), jnp.array([0.1, 2.0]))  # theta wraps to -pi/2
    np.testing.assert_allclose(reward, -((math.pi / 2) ** 2 + 0.4 + 0.0125 + 0.001), rtol=1e-6)


def test_the_tuned_configs_carry_the_papers_hyperparameters():
    hopper = compose_train("env=shac_hopper", "algo=shac")
    assert hopper.algo.num_envs == 256 and hopper.algo.critic_learning_rate == 2e-4
    humanoid = compose_train("env=shac_humanoid", "algo=shac", "budget=paper")
    assert humanoid.algo.target_alpha == 0.995 and list(humanoid.policy.hidden_sizes) == [256, 128]
    assert algorithm_options(humanoid)[1] == 2000
    assert algorithm_options(compose_train("env=shac_cartpole", "algo=shac", "budget=paper"))[1] == 500
    # PPO at the paper budget gets SHAC's samples: 2000 epochs x 256 envs x 32 steps on the hopper
    assert algorithm_options(compose_train("env=shac_hopper", "algo=ppo", "budget=paper"))[1] == 16_384_000
    options, iterations = algorithm_options(compose_train("env=shac_ant", "algo=bptt"))
    assert options["num_envs"] == 8 and iterations == 4
    override = compose_train("env=shac_ant", "algo=shac", "algo.num_envs=8")
    assert override.algo.num_envs == 8  # the command line wins over the tuned file


def test_the_fig4_experiment_sweeps_four_algorithms_over_the_five_tasks_with_paper_readings():
    cfg = compose_with_hydra("experiment=shac_fig4", "env=shac_ant", "algo=shac")
    assert cfg.num_seeds == 2 and compose_train("experiment=shac_fig4", "budget=paper").num_seeds == 5
    assert cfg.hydra.sweeper.params.algo == "shac,bptt,ppo,sac"
    assert cfg.hydra.sweeper.params.env.split(",") == list(SHAC_TASKS)
    assert paper_text("shac", "shac_ant", "shac_fig4") == "≈ 7500"
    assert paper_text("shac", "shac_hopper", "shac_fig4") == "–"


@pytest.mark.slow
def test_shac_trains_and_evaluates_on_the_mjx_ant_through_the_cli(tmp_path):
    """`diffrl train algo=shac env=shac_ant` then `diffrl eval`: mostly compiling the MJX programs (train
    chunk, evaluation); ~6 min on 2 cores on Brax's ant, longer on the rebuilt one (16 substeps: its train
    chunk compiled in ~5-15 min on the shared machine, docs/shac_tasks.md)."""
    run_diffrl(
        "train",
        "algo=shac",
        "env=shac_ant",
        "iterations=2",
        "num_seeds=1",
        "algo.num_envs=8",
        "env.episode_length=100",
        "eval.episodes=2",
        "logger.wandb.enabled=false",
        cwd=tmp_path,
        timeout=1200,
    )
    (run_dir,) = (tmp_path / "outputs").glob("train/*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps_per_seed"] == 2 * 8 * 32
    assert np.isfinite(summary["final_return"]["mean"])
    run_diffrl("eval", f"run_dir={run_dir}", "episodes=2", cwd=tmp_path, timeout=900)  # MJX state restored
    result = json.loads((run_dir / "eval.json").read_text())
    assert np.isfinite(result["return"]["mean"]) and result["iteration"] == 2


def test_checkpoints_keep_the_zero_size_arrays_of_mjx_states(tmp_path):
    """Orbax refuses zero-size arrays; an MJX state has some (``act`` of a model without muscles)."""
    from diffrl.checkpoint import Checkpointer

    state = {"act": jnp.zeros((2, 0)), "q": jnp.arange(6.0).reshape(2, 3)}
    saver = Checkpointer(tmp_path)
    saver.save(3, state, {"iteration": 3})
    saver.close()
    like = {"act": jnp.zeros((2, 0)), "q": jnp.zeros((2, 3))}
    restored, host = Checkpointer(tmp_path).restore(like)
    assert host["iteration"] == 3 and restored["act"].shape == (2, 0)
    np.testing.assert_array_equal(restored["q"], state["q"])


# --- the rebuilt bodies (shared/SHAC_BODIES.md: dflex's masses at density 1000, every geom on the ground) ---
# kg, the authors' model.py at density 1000 (SHAC_BODIES.md §5)
DFLEX_TOTAL_MASS = {"shac_ant": 182.176, "shac_hopper": 15.820, "shac_cheetah": 21.184, "shac_humanoid": 40.844}
# dflex's ke; the stance contacts K0 assumes
DFLEX_CONTACT = {"shac_ant": (4e4, 4), "shac_hopper": (2e4, 2), "shac_cheetah": (2e4, 2), "shac_humanoid": (2e4, 8)}


def rebuilt_model(task):
    import mujoco

    from diffrl.envs.shac_locomotion import SHAC_LOCOMOTION, diffrl_asset

    return mujoco.MjModel.from_xml_path(diffrl_asset(SHAC_LOCOMOTION[task].body_xml))


def ground_contacts_of_each_geom(model):
    """For each robot geom: lower the body until that geom's lowest point is 1 cm into the floor, collide,
    and return the geoms touching the floor (MuJoCo's own filter: contype/conaffinity, pairs, margins)."""
    import mujoco

    data = mujoco.MjData(model)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    height = 2 if model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE else model.jnt_qposadr[1]  # free z | rootz
    touching = {}
    for geom in range(model.ngeom):
        if geom == floor:
            continue
        data.qpos[:] = model.key_qpos[0] if model.nkey else model.qpos0
        mujoco.mj_kinematics(model, data)
        lowest = geom_lowest_point(model, data, geom)
        data.qpos[height] -= lowest + 0.01
        mujoco.mj_forward(model, data)
        pairs = [tuple(c.geom) for c in data.contact[: data.ncon]]
        touching[geom] = [g for pair in pairs if floor in pair for g in pair if g != floor]
    return touching


def geom_lowest_point(model, data, geom):
    import mujoco

    centre, radius = data.geom_xpos[geom], model.geom_size[geom, 0]
    if model.geom_type[geom] == mujoco.mjtGeom.mjGEOM_CAPSULE:
        half = data.geom_xmat[geom].reshape(3, 3)[:, 2] * model.geom_size[geom, 1]
        return min(centre[2] + half[2], centre[2] - half[2]) - radius
    return centre[2] - radius


@pytest.mark.parametrize("task", sorted(DFLEX_TOTAL_MASS))
def test_a_rebuilt_body_weighs_what_dflex_simulated_and_every_geom_touches_the_ground(task):
    model = rebuilt_model(task)
    assert model.body_mass.sum() == pytest.approx(DFLEX_TOTAL_MASS[task], rel=0.01)
    touching = ground_contacts_of_each_geom(model)
    assert all(geom in touching[geom] for geom in touching), {g: t for g, t in touching.items() if g not in t}
    # ground only, as dflex: no robot geom collides with another
    robot = list(touching)
    assert not any(model.geom_contype[a] & model.geom_conaffinity[b] for a in robot for b in robot)


@pytest.mark.parametrize("task", sorted(DFLEX_CONTACT))
def test_a_rebuilt_body_maps_dflex_contact_stiffness_onto_a_direct_critically_damped_solref(task):
    model = rebuilt_model(task)
    ke, stance = DFLEX_CONTACT[task]
    stiffness = ke / (model.body_mass.sum() / stance)
    expected = np.tile([-stiffness, -2 * math.sqrt(stiffness)], (model.ngeom, 1))  # the floor's too
    np.testing.assert_allclose(model.geom_solref, expected, rtol=0.01)


def test_the_soft_limit_torque_is_dflex_s_spring_outside_the_range_only():
    from diffrl.envs.shac_locomotion import soft_limit_torque

    limits = (jnp.array([7, 8]), jnp.array([6, 7]), jnp.array([-0.5, 0.5]), jnp.array([0.5, 1.5]))
    qpos = jnp.zeros(9).at[7].set(-0.7).at[8].set(1.0)  # 0.2 below the first range; inside the second
    np.testing.assert_allclose(soft_limit_torque(qpos, 8, limits), [0, 0, 0, 0, 0, 0, 200.0, 0.0], atol=1e-4)
    qpos = qpos.at[7].set(0.6).at[8].set(1.6)  # 0.1 above both
    np.testing.assert_allclose(soft_limit_torque(qpos, 8, limits)[6:], [-100.0, -100.0], atol=1e-4)


def test_the_rebuilt_humanoid_has_the_authors_21_joints_and_torques():
    model = rebuilt_model("shac_humanoid")
    assert model.nu == 21 and not np.any(model.jnt_limited)
    strength = [200, 200, 200] + [200, 200, 600, 400, 100, 100] * 2 + [100, 100, 200] * 2  # humanoid.py
    np.testing.assert_allclose(model.actuator_gear[:, 0], 0.35 * np.array(strength))
    assert list(model.jnt_dofadr[model.actuator_trnid[:, 0]]) == list(range(6, 27))  # dflex's DOF order


def test_the_rebuilt_ant_is_the_authors_and_refuses_a_pipeline_without_soft_limits():
    model = rebuilt_model("shac_ant")
    assert model.nu == 8 and np.all(model.actuator_gear[:, 0] == 200) and not np.any(model.jnt_limited)
    np.testing.assert_allclose(model.dof_armature[6:], 0.05)
    np.testing.assert_allclose(model.dof_damping[6:], 11.0)  # damping 1 + dflex's always-on limit damping 10
    np.testing.assert_allclose(np.degrees(model.jnt_range[1:3]), [[-40, 40], [30, 100]], atol=1e-4)
    with pytest.raises(ValueError, match="mjx"):
        make_env("shac_ant", "generalized")


def test_the_rebuilt_hopper_is_the_authors():
    """hopper.py's parse_mjcf call: armature 1.0 on all 6 dofs, damping 2 + limit_kd 10 (root 0 + 10), torque
    200 a; the start pose puts the torso at 1.25 with q_rootz = 0 and the foot 0.04 m above the ground."""
    model = rebuilt_model("shac_hopper")
    assert model.nq == model.nv == 6 and model.nu == 3 and not np.any(model.jnt_limited)
    np.testing.assert_allclose(model.actuator_gear[:, 0], 200.0)
    np.testing.assert_allclose(model.dof_armature, 1.0)
    np.testing.assert_allclose(model.dof_damping, [10, 10, 10, 12, 12, 12])
    np.testing.assert_allclose(model.jnt_range[3:], [[-2.61799, 0], [-2.61799, 0], [-0.785398, 0.785398]])
    np.testing.assert_allclose(model.geom_friction[1:, 0], 0.9)  # dflex's mu on the foot too (the file says 2)
    heights = start_heights(model, np.zeros(6))
    assert heights["torso"] == pytest.approx(1.25) and heights["lowest"] == pytest.approx(0.04, abs=1e-6)


def test_the_rebuilt_cheetah_is_the_authors():
    """cheetah.py's parse_mjcf call: armature 0.1 on all 9 dofs, the file's springs to 0 and damping + 10, the
    authors' ranges, torque 200 a on all six; root frame at 1.0, start root z -0.2: torso at 0.8."""
    model = rebuilt_model("shac_cheetah")
    assert model.nq == model.nv == 9 and model.nu == 6 and not np.any(model.jnt_limited)
    np.testing.assert_allclose(model.actuator_gear[:, 0], 200.0)
    np.testing.assert_allclose(model.dof_armature, 0.1)
    np.testing.assert_allclose(model.jnt_stiffness, [0, 0, 0, 240, 180, 120, 180, 120, 60])
    np.testing.assert_allclose(model.qpos_spring, 0.0)
    np.testing.assert_allclose(model.dof_damping, [10, 10, 10, 16, 14.5, 13, 14.5, 13, 11.5])
    ranges = [[-0.52, 1.05], [-0.785, 0.785], [-0.4, 0.785], [-1.5, 0.8], [-1.2, 1.1], [-3.1, -0.3]]
    np.testing.assert_allclose(model.jnt_range[3:], ranges)
    start = make_env("shac_cheetah", "mjx").sys.init_q
    np.testing.assert_allclose(start, [0, -0.2, 0, 0, 0, 0, 0, 0, 0], atol=1e-7)
    heights = start_heights(model, np.asarray(start))
    assert heights["torso"] == pytest.approx(0.8) and heights["lowest"] == pytest.approx(0.176, abs=1e-3)


def start_heights(model, qpos):
    """The torso's height and the lowest geom point's in pose ``qpos``."""
    import mujoco

    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    floor = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    lowest = min(geom_lowest_point(model, data, g) for g in range(model.ngeom) if g != floor)
    return {"torso": data.xpos[1][2], "lowest": lowest}


# --- SHAC as its authors had it (NVlabs/DiffRL models/, utils/running_mean_std.py, algorithms/shac.py) ---
def test_the_mlp_normalises_after_the_activation():
    """The authors' hidden layer: Linear -> ELU -> LayerNorm (a LayerNorm before the ELU would differ)."""
    from diffrl.networks.mlp import MLP

    net = MLP((5,), 2, "elu", layer_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    params = net.init(jax.random.PRNGKey(1), x)["params"]
    hidden = jax.nn.elu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    normed = (hidden - hidden.mean(-1, keepdims=True)) / jnp.sqrt(hidden.var(-1, keepdims=True) + 1e-6)
    expected = normed @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    np.testing.assert_allclose(net.apply({"params": params}, x), expected, atol=1e-5)


def test_shacs_actor_starts_as_pytorch_linear_layers_and_its_critic_orthogonal():
    cfg = compose_train("env=shac_ant", "algo=shac")
    options, iterations = algorithm_options(cfg)
    from diffrl.algos import make_algorithm
    from diffrl.experiment import build_policy

    env = types.SimpleNamespace(observation_size=37, action_size=8)
    algo = make_algorithm("shac", env, build_policy(cfg, env), {**options, "num_envs": 4}, iterations)
    actor = algo.policy.init(jax.random.PRNGKey(0))["params"]["MLP_0"]
    dense_layers = lambda mlp: [layer for name, layer in mlp.items() if name.startswith("Dense")]  # noqa: E731
    for layer in dense_layers(actor):  # U(+-1/sqrt(fan_in)) for weights and biases alike
        bound = 1 / math.sqrt(layer["kernel"].shape[0])
        for values in (layer["kernel"], layer["bias"]):
            assert np.abs(values).max() <= bound and np.abs(values).max() > 0.7 * bound
    critic = algo.critic_net.init(jax.random.PRNGKey(0), jnp.zeros(37))["params"]["MLP_0"]
    for layer in dense_layers(critic):  # orthogonal columns of norm sqrt(2), zero biases
        w = np.asarray(layer["kernel"])
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, 2 * np.eye(len(gram)), atol=1e-4)
        np.testing.assert_array_equal(layer["bias"], 0.0)


def test_the_critic_minibatches_are_contiguous_slices_of_the_window():
    from diffrl.algos.shac import contiguous_or_shuffled

    key = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(contiguous_or_shuffled(key, 8, 2, shuffle=False), [[0, 1, 2, 3], [4, 5, 6, 7]])
    shuffled = np.asarray(contiguous_or_shuffled(key, 8, 2, shuffle=True))
    assert sorted(shuffled.ravel()) == list(range(8)) and shuffled.tolist() != [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert compose_train("env=shac_ant", "algo=shac").algo.critic_shuffle is False


def test_a_quick_run_follows_the_paper_runs_learning_rate_schedule():
    from diffrl.algos.shac import linear_decay

    for budget, iterations in (("quick", 100), ("paper", 2000)):
        options, run = algorithm_options(compose_train("env=shac_ant", "algo=shac", f"budget={budget}"))
        assert run == iterations and options["schedule_iterations"] == 2000
    # at the end of the quick run the rate is the paper run's at iteration 100, not the floor
    np.testing.assert_allclose(linear_decay(100, 2000, 2e-3, 1e-5), 2e-3 - 100 / 2000 * (2e-3 - 1e-5), rtol=1e-6)
    options, _ = algorithm_options(compose_train("env=shac_cartpole", "algo=bptt", "budget=quick"))
    assert options["schedule_iterations"] == 67


def test_shacs_normaliser_is_the_authors_running_mean_std():
    """mean 0, var 1 at count 1e-4, then the parallel update; std = sqrt(var + 1e-5). (Brax's mean has no
    prior: the authors' adds 1e-4 mu^2 / n to the variance, below the 1e-5 epsilon from the first window on.)"""
    from diffrl.experiment import build_policy

    cfg = compose_train("env=shac_ant", "algo=shac")
    policy = build_policy(cfg, types.SimpleNamespace(observation_size=3, action_size=1))
    batch = np.random.default_rng(0).normal([1.0, 0.0, 5.0], [1.0, 1e-3, 0.1], (2048, 3))  # one window: 64 envs x 32
    state = policy.update_normalizer(policy.init_normalizer(), jnp.asarray(batch))
    count, mean, var = 1e-4, np.zeros(3), np.ones(3)  # the authors' RunningMeanStd.update
    delta, n = batch.mean(0) - mean, len(batch)
    var = (var * count + batch.var(0) * n + delta**2 * count * n / (count + n)) / (count + n)
    np.testing.assert_allclose(state.std, np.sqrt(var + 1e-5), rtol=1e-3)


def test_a_non_finite_state_ends_the_episode():
    env = ShacAnt.__new__(ShacAnt)
    obs = jnp.zeros(37).at[0].set(0.5)
    assert not env.episode_ends(obs) and env.episode_ends(obs.at[0].set(jnp.nan))
    assert env.episode_ends(obs.at[12].set(jnp.inf))  # anywhere in the observation, not only the height


def test_shac_refuses_grad_clip_norm_in_one_line():
    from diffrl.algos.apg import GradientConfig
    from diffrl.algos.shac import SHACConfig

    with pytest.raises(ValueError, match="grad_clip"):
        SHACConfig(grad=GradientConfig(clip_norm=1.0))


def test_shac_clips_each_gradient_entry_when_grad_clip_value_is_set():
    """clip_value before the norm clip: after [1, 1], a gradient [100, 1] clipped to [1, 1] moves both
    parameters alike; unclipped, the norm clip leaves its second entry ~0 and Adam moves them apart."""
    from diffrl.algos import make_algorithm
    from diffrl.experiment import build_policy

    def second_update(*overrides):
        cfg = compose_train("env=shac_ant", "algo=shac", *overrides)
        options, iterations = algorithm_options(cfg)
        env = types.SimpleNamespace(observation_size=37, action_size=8)
        optimizer = make_algorithm("shac", env, build_policy(cfg, env), options, iterations).actor_optimizer
        params = jnp.zeros(2)
        state = optimizer.init(params)
        _, state = optimizer.update(jnp.array([1.0, 1.0]), state, params)
        return optimizer.update(jnp.array([100.0, 1.0]), state, params)[0]

    clipped = second_update("algo.grad.clip_value=1.0")
    np.testing.assert_allclose(clipped[0], clipped[1], rtol=1e-5)
    unclipped = second_update()
    assert abs(float(unclipped[0] - unclipped[1])) > 0.1 * abs(float(unclipped[0]))
