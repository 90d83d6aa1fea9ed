"""ILD and BC (diffrl/algos/ild.py), the trajectory distances they use, and demo files (diffrl/demos.py).

The learning tests run on the closed-form acrobot (cheap to compile) with a demo recorded from a fixed
"teacher" policy: a real demo file, made by the same code as ``diffrl demos``, without training an expert.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffrl.algos.ild import BC, ILD, BCConfig, ILDConfig, action_error, fold_states
from diffrl.algos.trajectory_distance import aligned_distance, chamfer_distance, trajectory_distance
from diffrl.demos import (
    DemoError,
    best_full_length,
    check_demos_fit,
    demos_from_rollouts,
    load_demos,
    rollout_episodes,
    save_demos,
)
from diffrl.envs import make_env
from diffrl.networks import make_policy

from conftest import run_diffrl

TASK, BACKEND, LENGTH = "acrobot", "analytic", 64
POLICY = {
    "name": "gaussian_mlp",
    "hidden_sizes": [32, 32],
    "activation": "elu",
    "layer_norm": True,
    "init_log_std": -1.0,
}


# --- distances ------------------------------------------------------------------------------------------
def rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_chamfer_distance_matches_a_hand_computation_in_both_directions():
    agent = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    expert = np.array([[0.0, 0.1], [4.0, 4.0]])
    # agent -> expert: each agent state to its nearest expert state; expert -> agent: the other way round.
    forward = np.mean([min(rms(a, e) for e in expert) for a in agent])
    backward = np.mean([min(rms(a, e) for a in agent) for e in expert])
    assert forward != pytest.approx(backward)  # the two directions differ here: both must be counted
    np.testing.assert_allclose(chamfer_distance(jnp.asarray(agent), jnp.asarray(expert)), forward + backward, rtol=1e-5)


def test_aligned_distance_compares_state_t_with_state_t():
    agent = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    expert = np.array([[5.0, 5.0], [1.0, 0.0], [0.0, 0.0]])  # the same states, in the reverse order
    expected = np.mean([rms(a, e) for a, e in zip(agent, expert)])
    np.testing.assert_allclose(aligned_distance(jnp.asarray(agent), jnp.asarray(expert)), expected, rtol=1e-5)
    assert float(chamfer_distance(jnp.asarray(agent), jnp.asarray(expert))) < 1e-4  # Chamfer ignores the order


def test_multi_demo_distance_is_the_nearest_demo_and_normalisation_scales_features():
    rng = np.random.default_rng(0)
    agent = rng.normal(size=(6, 3))
    demos = np.stack([rng.normal(size=(5, 3)) + shift for shift in (3.0, 0.1, -2.0)])
    each = [float(chamfer_distance(jnp.asarray(agent), jnp.asarray(d))) for d in demos]
    np.testing.assert_allclose(trajectory_distance(jnp.asarray(agent), jnp.asarray(demos)), min(each), rtol=1e-5)
    # Normalised by running statistics: a feature in other units (x1000) counts as much as before.
    stats = fold_states(fold_states_init(3), jnp.asarray(demos.reshape(-1, 3)))
    scaled = np.array([1.0, 1000.0, 1.0])
    stats_scaled = fold_states(fold_states_init(3), jnp.asarray(demos.reshape(-1, 3) * scaled))
    from brax.training.acme.running_statistics import normalize

    plain = trajectory_distance(normalize(jnp.asarray(agent), stats), normalize(jnp.asarray(demos), stats))
    rescaled = trajectory_distance(
        normalize(jnp.asarray(agent * scaled), stats_scaled), normalize(jnp.asarray(demos * scaled), stats_scaled)
    )
    np.testing.assert_allclose(rescaled, plain, rtol=1e-4)


def fold_states_init(size: int):
    from brax.training.acme import running_statistics, specs

    return running_statistics.init_state(specs.Array((size,), jnp.float32))


# --- demo files -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acrobot():
    return make_env(TASK, BACKEND)


@pytest.fixture(scope="module")
def teacher_demo(acrobot, tmp_path_factory) -> pathlib.Path:
    """A demo file of a fixed random 'teacher' policy (deterministic), recorded as ``diffrl demos`` records."""
    policy = make_policy(POLICY, acrobot.observation_size, acrobot.action_size)
    params = policy.init(jax.random.PRNGKey(42))
    params = jax.tree.map(lambda x: 3.0 * x, params)  # a decisive teacher: it swings the acrobot about
    keys, starts, trajectory = rollout_episodes(
        acrobot, policy, params, policy.init_normalizer(), jax.random.PRNGKey(7), 4, LENGTH, stochastic=False
    )
    demos = demos_from_rollouts(TASK, BACKEND, keys, starts, trajectory, keep=4)
    path = tmp_path_factory.mktemp("demos") / "acrobot.npz"
    save_demos(path, demos, {"made_by": "tests/test_ild.py teacher"})
    return path


def test_demo_files_round_trip_best_first(teacher_demo):
    demos = load_demos(teacher_demo, TASK, BACKEND)
    assert demos.observation.shape == (4, LENGTH, 4) and demos.action.shape == (4, LENGTH, 1)
    assert demos.state.dtype == np.float32 and demos.state.shape[-1] == 4  # (q, qd) of the closed form
    assert np.all(np.diff(demos.returns) <= 0)
    np.testing.assert_allclose(demos.returns, demos.reward.sum(axis=1), rtol=1e-5)
    assert teacher_demo.with_suffix(".json").is_file()


def test_episodes_that_terminated_are_dropped_and_the_best_come_first():
    returns = np.array([5.0, 9.0, 7.0, 1.0])
    terminated = np.array([False, True, False, False])
    np.testing.assert_array_equal(best_full_length(returns, terminated, keep=2), [2, 0])


def bad_copy(source: pathlib.Path, target: pathlib.Path, **changes) -> pathlib.Path:
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez_compressed(target, **arrays)
    return target


def test_bad_demo_files_get_one_line_that_says_which_and_how_to_make_one(teacher_demo, acrobot, tmp_path):
    cases = {
        "missing": (tmp_path / "nope.npz", "no demo file"),
        "task": (bad_copy(teacher_demo, tmp_path / "t.npz", task=np.asarray("hopper")), "holds demos of env 'hopper'"),
        "backend": (bad_copy(teacher_demo, tmp_path / "b.npz", backend=np.asarray("mjx")), "recorded on backend 'mjx'"),
        "garbage": (tmp_path / "g.npz", "cannot read demo file"),
    }
    (tmp_path / "g.npz").write_text("not a zip")
    for name, (path, words) in cases.items():
        with pytest.raises(DemoError) as err:
            load_demos(path, TASK, BACKEND)
        message = str(err.value)
        assert words in message and "\n" not in message and "diffrl demos env=acrobot" in message, name
    with np.load(teacher_demo) as data:
        wrong_state = data["state"][..., :3]
        short = {k: data[k][:, :10] for k in ("observation", "action", "reward", "state")}
    path = bad_copy(teacher_demo, tmp_path / "s.npz", state=wrong_state)
    with pytest.raises(DemoError, match="state size 3, but env 'acrobot' on analytic has 4"):
        check_demos_fit(load_demos(path, TASK, BACKEND), path, acrobot, LENGTH)
    path = bad_copy(teacher_demo, tmp_path / "l.npz", **short)
    with pytest.raises(DemoError, match=f"episodes of 10 steps, shorter than the {LENGTH}-step rollouts"):
        check_demos_fit(load_demos(path, TASK, BACKEND), path, acrobot, LENGTH)


def test_diffrl_train_refuses_a_mismatched_demo_file_in_one_line(teacher_demo, tmp_path):
    proc = run_diffrl(
        "train", "algo=bc", "env=cartpole_swingup", f"algo.demo={teacher_demo}", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("diffrl train: error:") and "holds demos of env 'acrobot', not 'cartpole_swingup'" in last
    assert "diffrl demos env=cartpole_swingup" in last


# --- learning -----------------------------------------------------------------------------------------------
def imitation_config(cls, path: pathlib.Path, **options):
    return cls(demo=str(path), task=TASK, backend=BACKEND, episode_length=LENGTH, **options)


def student(acrobot):
    return make_policy(POLICY, acrobot.observation_size, acrobot.action_size)


def test_bc_lowers_the_action_error_on_the_demos(teacher_demo, acrobot):
    bc = BC(acrobot, student(acrobot), imitation_config(BCConfig, teacher_demo, demos=4, steps_per_iteration=100))
    state = bc.init(jax.random.PRNGKey(0))
    error = lambda s: float(action_error(bc.policy, *bc.policy_params(s), bc.demos))
    before = error(state)
    state, metrics = jax.jit(bc.train_step)(state)
    after = error(state)
    assert after < 0.5 * before, (before, after)
    np.testing.assert_allclose(metrics["action_error"], after, rtol=0.2)


def distance_to_demo(ild: ILD, state) -> float:
    """Chamfer distance of the deterministic policy's rollout from the demo's start, normalised by the demos'
    statistics alone (fixed: the algorithm's own statistics move with the agent), computed here and not by
    the algorithm (whose loss the flipped-sign case mutates)."""
    from brax.training.acme.running_statistics import normalize

    from diffrl.algos.ild import state_normalizer

    trajectory = ild.rollout(state.params, state.normalizer, jax.random.PRNGKey(0), deterministic=True)
    statistics = state_normalizer(ild.demos.state)
    agent = normalize(trajectory.pipeline_state, statistics)
    return float(trajectory_distance(agent, normalize(ild.demos.state, statistics)))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["ild", "flipped_sign"])
def test_ild_closes_the_distance_to_the_demo_and_a_flipped_loss_does_not(teacher_demo, acrobot, sign, monkeypatch):
    import diffrl.algos.ild as ild_module

    if sign < 0:  # the mutation: ascend the distance instead of descending it
        real = ild_module.trajectory_distance
        monkeypatch.setattr(ild_module, "trajectory_distance", lambda *a, **k: -real(*a, **k))
    config = imitation_config(ILDConfig, teacher_demo, num_envs=4, bc_steps=0, learning_rate=3e-3)
    ild = ILD(acrobot, student(acrobot), config)
    state = ild.init(jax.random.PRNGKey(1))
    before = distance_to_demo(ild, state)
    step = jax.jit(ild.train_step)
    for _ in range(40):
        state, metrics = step(state)
    after = distance_to_demo(ild, state)
    print(f"distance to the demo: {before:.4f} -> {after:.4f}")
    assert int(metrics["nonfinite_grads"]) == 0
    if sign > 0:
        assert after < 0.6 * before, (before, after)
    else:
        assert after > 0.9 * before, (before, after)


# --- the committed demos ------------------------------------------------------------------------------------
ILD_FIG_TASKS = ("hopper", "walker2d", "ant", "reacher", "swimmer", "inverted_pendulum", "acrobot")


@pytest.mark.parametrize("task", ILD_FIG_TASKS)
def test_every_task_of_the_ild_figure_has_a_committed_demo_that_fits_it(task):
    import json

    from diffrl.demos import default_demo_path
    from diffrl.experiment import demo_path

    from conftest import compose_train

    cfg = compose_train("algo=ild", f"env={task}")
    path = demo_path(cfg)
    assert path == default_demo_path(task)
    demos = load_demos(path, task, cfg.env.backend)
    check_demos_fit(demos, path, make_env(task, cfg.env.backend), int(cfg.algo.episode_length))
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["command"].startswith(f"diffrl demos env={task}")
    np.testing.assert_allclose(provenance["returns"], demos.returns, rtol=1e-3)


def test_diffrl_demos_trains_an_expert_and_writes_the_demo_file_and_its_provenance(tmp_path):
    """The whole command, with the cheapest expert (CEM on the closed-form acrobot; `make demos` uses PPO)."""
    import json

    out = tmp_path / "acrobot.npz"
    run_diffrl(
        "demos",
        "env=acrobot",
        "expert=cem",
        "iterations=2",
        "algo.population=4",
        "algo.elites=2",
        "eval.episodes=2",
        "demos.rollouts=6",
        "demos.keep=3",
        f"demos.out={out}",
        "logger.wandb.enabled=false",
        cwd=tmp_path,
    )
    demos = load_demos(out, "acrobot", "analytic")
    assert demos.episodes == 3 and demos.length == 128  # ILD's horizon, whatever the task's own episode
    provenance = json.loads(out.with_suffix(".json").read_text())
    assert provenance["expert"] == "cem" and provenance["command"].startswith("diffrl demos env=acrobot")
    assert provenance["rollouts"] == 6 and provenance["kept"] == 3 and provenance["expert_training_s"] > 0
    summary = json.loads((pathlib.Path(provenance["expert_run_dir"]) / "summary.json").read_text())
    assert summary["algo"] == "cem" and summary["effective"]["env"]["episode_length"] == 128


def test_a_run_warms_up_with_bc_logs_it_as_iteration_0_and_evaluates_over_the_demo_horizon(teacher_demo, tmp_path):
    import json

    from diffrl.run import train

    from conftest import compose_train, read_metrics

    cfg = compose_train(
        "algo=ild",
        "env=acrobot",
        f"algo.demo={teacher_demo}",
        f"algo.episode_length={LENGTH}",
        "algo.num_envs=2",
        "algo.bc_steps=50",
        "iterations=2",
        "num_seeds=2",
        "eval.episodes=2",
        "logger.wandb.enabled=false",
        "logger.console.progress_bar=false",
    )
    summary = train(cfg, tmp_path)
    warmup, *iterations = read_metrics(tmp_path)
    assert warmup["iteration"] == 0 and warmup["bc_steps"] == 50 and warmup["warmup_s"] > 0
    assert warmup["bc_action_error_final"] < warmup["bc_action_error_initial"]
    assert [row["iteration"] for row in iterations] == [1, 2] and len(iterations[-1]["return"]) == 2
    assert summary["final_episode_length"]["mean"] == LENGTH  # the acrobot never terminates: whole 64-step episodes
    assert summary["effective"]["algo"]["demo"] == str(teacher_demo)
    assert json.loads((tmp_path / "summary.json").read_text())["algo"] == "ild"


def test_a_brax_expert_samples_its_actions_only_when_asked_to():
    """``diffrl demos`` samples Brax's experts (``FeedForwardPolicy(stochastic=True)``); evaluation never does."""
    from brax.training.acme import running_statistics, specs
    from brax.training.agents.ppo import networks as ppo_networks

    from diffrl.baselines.common import FeedForwardPolicy

    network = ppo_networks.make_ppo_networks(4, 2)
    params = (
        running_statistics.init_state(specs.Array((4,), jnp.float32)),
        network.policy_network.init(jax.random.PRNGKey(0)),
    )
    deterministic = FeedForwardPolicy(ppo_networks.make_inference_fn(network))
    sampling = dataclasses.replace(deterministic, stochastic=True)
    obs, carry = jnp.ones(4), deterministic.initial_carry()
    act = lambda policy, key: np.asarray(policy.act(params, None, carry, obs, key)[1])
    mean_action = act(deterministic, None)
    np.testing.assert_array_equal(act(deterministic, jax.random.PRNGKey(1)), mean_action)  # evaluation: the mean
    np.testing.assert_array_equal(act(sampling, None), mean_action)  # no key: the mean
    samples = [act(sampling, jax.random.PRNGKey(k)) for k in range(2)]
    assert not np.allclose(samples[0], samples[1]) and np.all(np.abs(samples[0]) <= 1)
