"""External trainers (Brax's PPO/SAC/APG, SB3's PPO/SAC) through the runner: learning, run directory,
checkpoints that reload through ``diffrl eval``, resume at the first unfinished seed, no torch import,
and every trainer on a Brax task whose episodes terminate (tiny runs on ``inverted_pendulum``)."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf
from trivial_policies import best_trivial_return

from diffrl.baselines import trainer_class
from diffrl.baselines.runner import build_trainer, finished_seeds, seed_dir
from diffrl.envs import make_env
from diffrl.eval_run import evaluate_run
from diffrl.experiment import _EVAL_KEY_OFFSET, algorithm_options
from diffrl.run import train

from conftest import REPO, compose_train, run_diffrl

# Short runs on the cart-pole swing-up (closed-form dynamics: the fastest backend to compile and run).
COMMON = (
    "env=cartpole_swingup",
    "env.backend=analytic",
    "num_seeds=1",
    "eval.episodes=4",
    "logger.wandb.enabled=false",
    "logger.console.progress_bar=false",
    "algo.num_evals=3",
)
# A trained policy must beat the best trivial policy on the task (zero action, a constant push either way,
# uniform random actions: tests/trivial_policies.py, 64 episodes) by 10 % of that return's size. On the
# closed-form cart-pole swing-up (500 steps) a constant push is best: -3361 (zero -4925, random -3759), so
# the bar is -3025. Measured with seed 0 on the loaded 2 shared cores: Brax PPO, 163,840 steps: -3466 ->
# -1438 (383 s); SAC needs more steps: 160k steps x 4 updates reach -2328 (~1 min); SB3 SAC, 48k steps x 8
# updates (the quick budget's): -1414 (~70 s). SAC and SB3 SAC are slow.
LEARNING = {
    "ppo": ("algo=ppo", "iterations=163840"),
    "sac": ("algo=sac", "iterations=160000", "algo.grad_updates_per_step=4"),
    "sb3_sac": ("algo=sb3_sac", "iterations=48000"),
}
# SB3's PPO does not beat a trivial policy within a budget a test affords (20,480 steps: -4783; 81,920
# steps: -4779, against zero action's -4925 and a constant push's -3361): it is run and reloaded, and no
# learning is claimed for it.
RUN_ONLY = {"sb3_ppo": ("algo=sb3_ppo", "iterations=20480")}
SLOW = {"sac", "sb3_sac"}
# Brax APG on the cart-pole swing-up, seed 0: -4921 -> -1338 after 100 updates (45 s).
BRAX_APG_UPDATES = 100


@functools.cache
def learning_bar() -> float:
    """The return a trained policy must beat: the best trivial policy's, plus 10 % of its size."""
    best = best_trivial_return("env=cartpole_swingup", "env.backend=analytic")
    return best + 0.1 * abs(best)


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "algo", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in [*LEARNING, *RUN_ONLY]]
)
def test_a_short_run_reloads_and_a_learning_run_beats_every_trivial_policy(algo, tmp_path):
    overrides = {**LEARNING, **RUN_ONLY}[algo]
    cfg = compose_train(*COMMON, *overrides)
    summary = train(cfg, tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")  # what Hydra writes for `diffrl train`

    rows = read_rows(tmp_path)
    assert rows[0]["env_steps"] == 0 and rows[-1]["env_steps"] >= int(overrides[1].split("=")[1])
    initial, final = rows[0]["return"], summary["final_return"]["mean"]
    if algo.startswith("sb3"):
        # SB3's reports score every model with one evaluator and one key (the agent seed's): the first
        # (before training) and the last (the trained model) compare like with like. Brax's evaluator
        # draws fresh start states at each report, so there the final evaluation stands in.
        final = rows[-1]["return"]
    if algo in LEARNING:
        assert final > learning_bar() and final > initial, (
            f"{algo}: {initial:.0f} -> {final:.0f} (bar {learning_bar():.0f})"
        )
    assert len(summary["final_return"]["per_seed"]) == 1 and summary["seeds"] == "sequential"

    # The checkpoint reloads (from the run directory alone) and reproduces the final evaluation exactly.
    assert finished_seeds(tmp_path, 1) == 1
    result = evaluate_run(tmp_path, episodes=4, seed=_EVAL_KEY_OFFSET)  # the summary's eval key (seed 0)
    np.testing.assert_allclose(result["return"]["per_seed"], summary["final_return"]["per_seed"], rtol=1e-5)


@pytest.mark.slow
def test_brax_apg_learns_the_cartpole_swing_up(tmp_path):
    """Brax's own APG loop and MLP policy, through the closed-form cart-pole."""
    summary = train(compose_train(*COMMON, "algo=brax_apg", f"iterations={BRAX_APG_UPDATES}"), tmp_path)
    rows = read_rows(tmp_path)
    assert [r["iteration"] for r in rows] == [0, BRAX_APG_UPDATES // 2, BRAX_APG_UPDATES]
    assert rows[-1]["env_steps"] == BRAX_APG_UPDATES * 24 * 100  # updates x envs x horizon (the quick budget's)
    initial, final = rows[0]["return"], summary["final_return"]["mean"]
    assert final > learning_bar() and final > initial, (
        f"brax_apg: {initial:.0f} -> {final:.0f} (bar {learning_bar():.0f})"
    )


@pytest.mark.parametrize("algo", ["ppo", "sac", "brax_apg"])
def test_brax_policy_checkpoint_reloads_with_identical_actions(algo, tmp_path):
    cfg = compose_train(*COMMON, f"algo={algo}")
    env = make_env(cfg.env.name, cfg.env.backend)
    trainer, _ = build_trainer(cfg, env)
    normalizer, params = trainer._like()
    # A non-trivial policy: random weights and observation statistics.
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape, x.dtype), params)
    normalizer = normalizer.replace(mean=jnp.arange(4.0), std=jnp.linspace(0.5, 2.0, 4))
    trainer.save((normalizer, params), tmp_path)
    reloaded = trainer.load(tmp_path)

    obs = jax.random.normal(jax.random.PRNGKey(2), (8, env.observation_size))

    def actions_of(policy_params):
        policy, stacked, norm = trainer.evaluation_policy([policy_params])
        one = jax.tree.map(lambda x: x[0], stacked)
        return jax.vmap(lambda o: policy.act(one, norm[0], policy.initial_carry(), o)[1])(obs)

    actions = [actions_of((normalizer, params)), actions_of(reloaded)]
    np.testing.assert_array_equal(actions[0], actions[1])
    assert float(jnp.std(actions[0])) > 1e-3  # not a constant policy


@pytest.mark.parametrize("algo", ["sb3_ppo", "sb3_sac"])
def test_sb3_checkpoint_reloads_with_identical_actions(algo, tmp_path):
    cfg = compose_train(*COMMON, f"algo={algo}")
    env = make_env(cfg.env.name, cfg.env.backend)
    trainer, _ = build_trainer(cfg, env)
    from diffrl.baselines.vec_env import JaxVecEnv

    small_batch = {"batch_size": 64} if algo == "sb3_ppo" else {}  # a minibatch that fits 2 envs' rollout
    model = trainer.algo_class(
        "MlpPolicy",
        JaxVecEnv(env, 2, 10),
        seed=0,
        device="cpu",
        policy_kwargs=trainer.policy_kwargs,
        **{**trainer.kwargs, **small_batch},
    )
    trainer.save(model, tmp_path)
    reloaded = trainer.load(tmp_path)
    obs = np.random.default_rng(0).normal(size=(8, env.observation_size)).astype(np.float32)
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], reloaded.predict(obs, deterministic=True)[0]
    )
    # ... and the JAX-side adapter (used by the evaluator) gives SB3's own actions.
    policy, index, norm = trainer.evaluation_policy([reloaded])
    via_jax = jax.jit(lambda o: policy.act(index[0], norm[0], policy.initial_carry(), o)[1])(obs)
    np.testing.assert_allclose(np.asarray(via_jax), model.predict(obs, deterministic=True)[0], rtol=1e-6)


def test_resume_keeps_finished_seeds_and_reruns_the_rest(tmp_path):
    overrides = (
        *COMMON,
        "algo=ppo",
        "num_seeds=2",
        "iterations=1",
        "env.episode_length=20",
        "algo.num_evals=2",
        "eval.episodes=1",
    )
    train(compose_train(*overrides), tmp_path)
    # Simulate a job killed during seed 1: its checkpoint and its metrics are incomplete.
    (seed_dir(tmp_path, 1) / "result.json").unlink()
    finished_before = (seed_dir(tmp_path, 0) / "result.json").stat().st_mtime_ns
    summary = train(compose_train(*overrides, f"resume={tmp_path}"), tmp_path)
    assert (seed_dir(tmp_path, 0) / "result.json").stat().st_mtime_ns == finished_before  # not rerun
    assert finished_seeds(tmp_path, 2) == 2 and len(summary["final_return"]["per_seed"]) == 2
    assert [r["seed_index"] for r in read_rows(tmp_path)] == [0, 0, 1, 1]  # nothing lost, nothing repeated


def test_torch_is_not_imported_for_brax_agents():
    code = (
        "import sys; from conftest import compose_train; from diffrl.baselines.runner import build_trainer;"
        "from diffrl.envs import make_env; cfg = compose_train('algo=ppo');"
        "build_trainer(cfg, make_env('acrobot', 'analytic')); import diffrl.run, diffrl.eval_run;"
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- Brax's tasks, whose episodes terminate: tiny runs of every trainer on the inverted pendulum (the
# pole falls past 0.2 rad -> done), on the generalized pipeline: the cheapest terminating task to compile.
PENDULUM_LIMIT = 50
PENDULUM = (
    "env=inverted_pendulum",
    "env.backend=generalized",
    f"env.episode_length={PENDULUM_LIMIT}",
    "num_seeds=1",
    "eval.episodes=2",
    "logger.wandb.enabled=false",
    "logger.console.progress_bar=false",
    "algo.num_evals=2",
    "algo.num_eval_envs=2",
)
# The smallest budgets each trainer accepts: one training epoch of a few dozen env steps.
TINY = {
    "ppo": (
        "iterations=1",
        "algo.num_envs=4",
        "algo.batch_size=4",
        "algo.num_minibatches=2",
        "algo.unroll_length=5",
        "algo.num_updates_per_batch=1",
    ),
    "sac": ("iterations=40", "algo.num_envs=4", "algo.batch_size=8", "algo.grad_updates_per_step=1"),
    "brax_apg": ("iterations=2", "algo.num_envs=2", "algo.horizon_length=5"),
    "sb3_ppo": ("iterations=16", "algo.num_envs=2", "algo.n_steps=8", "algo.batch_size=16", "algo.n_epochs=1"),
    "sb3_sac": (
        "iterations=8",
        "algo.num_envs=2",
        "algo.batch_size=8",
        "algo.gradient_steps=1",
        "algo.buffer_size=1000",
    ),
}


def check_terminating_run(summary, run_dir):
    assert summary["env"] == "inverted_pendulum" and summary["seeds"] == "sequential"
    assert np.isfinite(summary["final_return"]["mean"])
    length = summary["final_episode_length"]["mean"]
    assert 1 <= length < PENDULUM_LIMIT  # a briefly trained policy drops the pole: the episode ends early
    # The pendulum pays 1 per step alive: the return counts the steps up to the episode's end, none after.
    assert summary["final_return"]["mean"] == pytest.approx(length)
    assert summary["effective"]["algo"]["episode_length"] == PENDULUM_LIMIT
    rows = read_rows(run_dir)
    assert rows[0]["env_steps"] == 0 and all(0 < r["return"] <= PENDULUM_LIMIT for r in rows)
    assert all(0 < r["eval/avg_episode_length"] <= PENDULUM_LIMIT for r in rows)
    assert finished_seeds(run_dir, 1) == 1


# ppo runs through the command line below in the fast suite, and the SB3 adapter's termination handling
# is tested fast in test_vec_env.py; each run here costs ~30-45 s of compiling on 2 cores: slow.
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["sac", "brax_apg", "sb3_ppo", "sb3_sac"])
def test_every_trainer_runs_on_a_terminating_brax_task(algo, tmp_path):
    cfg = compose_train(*PENDULUM, f"algo={algo}", *TINY[algo])
    summary = train(cfg, tmp_path)
    check_terminating_run(summary, tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    # diffrl eval's path (checkpoint -> policy -> masked episodes) reproduces the final evaluation.
    result = evaluate_run(tmp_path, episodes=2, seed=_EVAL_KEY_OFFSET)
    np.testing.assert_allclose(result["return"]["per_seed"], summary["final_return"]["per_seed"], rtol=1e-5)
    np.testing.assert_allclose(result["length"]["per_seed"], summary["final_episode_length"]["per_seed"])


def test_ppo_on_a_terminating_brax_task_through_the_command_line_with_a_replay(tmp_path):
    """`diffrl train` + `diffrl eval html=true` (and `early_exit=true`) on the inverted pendulum (Brax's PPO)."""
    run_diffrl("train", *PENDULUM, "algo=ppo", *TINY["ppo"], cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "train").glob("*/*_inverted_pendulum_ppo")
    check_terminating_run(json.loads((run_dir / "summary.json").read_text()), run_dir)
    # Brax trains one whole epoch of one batch (4 envs x 5 steps x 2 minibatches), not iterations=1, and says so
    assert read_rows(run_dir)[-1]["env_steps"] == 40
    assert "ppo will train 40 per seed, not iterations=1" in (run_dir / "train.log").read_text()
    run_diffrl("eval", f"run_dir={run_dir}", "episodes=2", "html=true", cwd=tmp_path)
    result = json.loads((run_dir / "eval.json").read_text())
    assert all(1 <= n <= PENDULUM_LIMIT for n in result["length_per_episode"][0])
    assert 1 <= result["replay"]["frames"] < PENDULUM_LIMIT  # the replay stops where its episode ended
    assert (run_dir / "replay.html").stat().st_size > 1000
    # early_exit=true reaches the evaluator from the command line and gives the default's numbers
    run_diffrl("eval", f"run_dir={run_dir}", "episodes=2", "early_exit=true", cwd=tmp_path)
    early = json.loads((run_dir / "eval.json").read_text())
    assert early["early_exit"] is True and result["early_exit"] is False
    assert early["length_per_episode"] == result["length_per_episode"]
    np.testing.assert_allclose(early["return_per_episode"], result["return_per_episode"], rtol=1e-5)


@pytest.mark.slow
def test_ppo_on_hopper_end_to_end_with_terminations(tmp_path):
    """Brax's PPO on hopper (MJX, contacts, 1000-step episodes that end when the hopper falls): a short
    run, then `diffrl eval` with a replay. A policy trained this briefly falls long before 1000 steps."""
    cfg = compose_train(
        "env=hopper",
        "algo=ppo",
        "num_seeds=1",
        "iterations=20480",
        "algo.num_evals=2",
        "eval.episodes=4",
        "logger.wandb.enabled=false",
        "logger.console.progress_bar=false",
    )
    summary = train(cfg, tmp_path)
    assert summary["effective"]["algo"]["episode_length"] == 1000 and summary["backend"] == "mjx"
    assert 1 <= summary["final_episode_length"]["mean"] < 1000
    assert all(r["eval/avg_episode_length"] < 1000 for r in read_rows(tmp_path))  # Brax's evaluator too
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    result = evaluate_run(tmp_path, episodes=4, seed=_EVAL_KEY_OFFSET, html=True)
    np.testing.assert_allclose(result["return"]["per_seed"], summary["final_return"]["per_seed"], rtol=1e-5)
    assert 1 <= result["replay"]["frames"] < 1000 and (tmp_path / "replay.html").is_file()


def test_sb3_trains_whole_rollouts_of_all_envs():
    """SB3's ``learn`` collects n_steps (PPO) or train_freq (SAC) steps of every env at a time, so its quick
    budgets' 200,000 and 100,000 steps are 20 rollouts of 64 x 160 and 1563 rounds of 64 x 1."""
    env = make_env("cartpole_swingup", "analytic")
    for algo, trained in (("sb3_ppo", 20 * 64 * 160), ("sb3_sac", 1563 * 64)):
        options, iterations = algorithm_options(compose_train(*COMMON, f"algo={algo}", "budget=quick"))
        assert trainer_class(algo)(env, options, iterations).trained_iterations() == trained, algo
