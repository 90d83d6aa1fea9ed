"""The `diffrl` command: subcommands, usage, and every refusal it can give: one line, exit status 2,
nothing trained."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf

from cli.main import main as diffrl_main

from conftest import REPO, compose_train


def diffrl(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    proc = diffrl("--help")
    assert proc.returncode == 0
    for command in ("train", "eval", "table", "plot"):
        assert f"  {command} " in proc.stdout


def test_unknown_subcommand_prints_usage_and_fails():
    proc = diffrl("fly")
    assert proc.returncode == 2
    assert "unknown command 'fly'" in proc.stderr and "usage:" in proc.stderr


def test_misspelled_key_fails():
    proc = diffrl("train", "algo.populaton=3")
    assert proc.returncode != 0
    assert "populaton" in proc.stderr


def test_cfg_job_prints_the_composed_config():
    proc = diffrl("train", "env=cartpole_swingup", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: cartpole_swingup" in proc.stdout and "num_seeds: 8" in proc.stdout


def test_a_refusal_is_one_line_on_stderr_of_the_real_command(tmp_path):
    """The table below runs the CLI in this process; here once as a user runs it, in its own process."""
    proc = diffrl("train", f"resume={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"diffrl train: error: resume: {tmp_path} is not a diffrl run directory (no .hydra/overrides.yaml)"
    ]


def taken_run_dir(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "summary.json").write_text("{}")
    return [f"hydra.run.dir={tmp_path}/taken", "debug=smoke"]


def run_without_checkpoints(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- algo=cem\n- debug=smoke\n")
    return [f"resume={tmp_path}/run"]


def more_devices_than_jax_sees(tmp_path):
    """Twice this process's devices: JAX has started here, so hardware.devices cannot add any."""
    return ["algo=cem", "debug=smoke", f"hardware.devices={2 * len(jax.local_devices())}"]


def demo_file(tmp_path, **changes):
    """The committed acrobot demos with ``changes`` (arrays by name; ``None`` drops one)."""
    with np.load(REPO / "diffrl" / "data" / "demos" / "acrobot.npz") as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(tmp_path / "demo.npz", **{name: value for name, value in arrays.items() if value is not None})
    return ["algo=bc", "env=acrobot", f"algo.demo={tmp_path}/demo.npz"]


def unreadable_demo_file(tmp_path):
    (tmp_path / "demo.npz").write_text("not a zip")
    return ["algo=bc", f"algo.demo={tmp_path}/demo.npz"]


def moved_start_state(tmp_path):
    with np.load(REPO / "diffrl" / "data" / "demos" / "acrobot.npz") as data:
        return demo_file(tmp_path, start_state=data["start_state"] + 0.5)


# (diffrl train arguments, or a function of tmp_path giving them; words of the one line, literal). Every
# refusal the CLI, the config checks and the algorithms' option checks raise, once. What is refused before
# Hydra starts, in the config checks, and while the run is built (before any compile) all end the same way.
TRAIN_REFUSALS = {
    # before Hydra: the command line itself
    "group choice": (
        ["algo=nope"],
        "unknown algo 'nope'; valid choices: bc, bptt, brax_apg, ce_apg, cem, ild, ild_l2, papg, ppo, sac, "
        "sb3_ppo, sb3_sac, shac",
    ),
    "group choice in a sweep": (["-m", "env=acrobot,nope"], "unknown env 'nope'; valid choices: acrobot, ant,"),
    "hardware choice": (["hardware=tpu"], "unknown hardware 'tpu'; valid choices: cpu, gpu"),
    "launcher choice": (
        ["launcher=nope"],
        "unknown launcher 'nope'; valid choices: joblib, local, slurm, submitit_local",
    ),
    "platforms in one process": (["-m", "hardware=cpu,gpu"], "-m hardware=cpu,gpu with launcher=local: the jobs share"),
    "gpu job without a gpu": (
        ["-m", "hardware=gpu", "launcher=slurm"],
        "hardware=gpu with launcher=slurm asks for no GPU per job (hydra.launcher.gpus_per_node=0)",
    ),
    "resume of no run": (["resume=/nonexistent/run"], "resume: /nonexistent/run is not a diffrl run directory"),
    # the composed config (diffrl.experiment.check_config)
    "taken run directory": (taken_run_dir, "already holds a run (summary.json); a new run never overwrites"),
    "backend": (
        ["env=hopper", "env.backend=analytic"],
        "env 'hopper' has no backend 'analytic' (no closed-form dynamics for this task); valid backends for hopper:",
    ),
    "device count": (["hardware.devices=two"], "hardware.devices='two': expected a device count >= 1, or all"),
    "devices divide nothing": (["algo=cem", "hardware.devices=5"], "hardware.devices=5 divides neither num_seeds=8"),
    "devices for torch": (["algo=sb3_ppo", "hardware.devices=2"], "algo=sb3_ppo trains one PyTorch process per seed"),
    "policy for an external agent": (["algo=ppo", "policy=mlp"], "algo=ppo trains Brax's or SB3's own networks"),
    "nan injection for an external agent": (
        ["algo=ppo", "env.inject_nan_after=3"],
        "env.inject_nan_after works with diffrl's own algorithms, not algo=ppo",
    ),
    "torch on a gpu": (["algo=sb3_sac", "hardware=gpu"], "algo=sb3_sac trains with PyTorch's CPU build"),
    "no policy": (["algo=cem", "~policy"], "algo=cem needs a policy: add policy=<"),
    "unknown policy": (["policy.name=nope"], "unknown policy 'nope'; valid choices:"),
    "stochastic policy for a search": (["algo=cem", "policy=gaussian_mlp"], "cem"),
    "missing demos": (["algo=bc", "env=cartpole_swingup"], "no demo file"),
    "unreadable demo file": (unreadable_demo_file, "cannot read demo file"),
    "not a demo file": (lambda tmp: demo_file(tmp, reward=None), "is not a diffrl demo file (no reward)"),
    "demos of another backend": (
        lambda tmp: demo_file(tmp, backend=np.asarray("mjx")),
        "was recorded on backend 'mjx', and this run uses 'analytic'",
    ),
    "demos without episodes": (
        lambda tmp: demo_file(tmp, **{k: np.zeros((0, 1, 1)) for k in ("observation", "action", "state")}),
        "holds no episodes",
    ),
    "unknown budget": (["budget=huge"], "unknown budget 'huge' for algo 'ce_apg'; valid choices: quick, paper"),
    "budget without a value": (
        ["algo=ce_apg", "algo.budgets.quick.population=null"],
        "algo 'ce_apg': budget 'quick' sets no value for ['population']",
    ),
    "no iterations": (["iterations=0"], "iterations must be >= 1, got 0"),
    # while the run is built, before any compile (diffrl.run.build_experiment, place_on_devices, resume)
    "more devices than JAX sees": (more_devices_than_jax_sees, "cpu device(s); on CPU set XLA_FLAGS="),
    "resume without a checkpoint": (run_without_checkpoints, "no checkpoint under"),
    "ce_apg elites": (["algo=ce_apg", "algo.elites=25"], "ce_apg needs 0 < elites <= population, got 25 and 24"),
    "ce_apg deploy": (["algo=ce_apg", "algo.deploy=worst"], "ce_apg deploy must be 'best' or 'mean', got 'worst'"),
    "ce_apg score window": (["algo=ce_apg", "algo.score_window=26"], "ce_apg needs 0 < score_window <= apg_steps"),
    "ce_apg normaliser rollouts": (["algo=ce_apg", "algo.normalizer_rollouts=0"], "normalizer_rollouts >= 1, got 0"),
    "papg init": (["algo=papg", "algo.init=nope"], "papg init must be one of"),
    "papg normaliser": (["algo=papg", "algo.update_normalizer=sometimes"], "papg update_normalizer must be one of"),
    "cem elites": (["algo=cem", "algo.elites=0"], "cem needs 0 < elites <= population"),
    "shac norm clip": (
        ["algo=shac", "env=shac_cartpole", "algo.grad.clip_norm=1.0"],
        "algo.grad.clip_norm must be null",
    ),
    "shac horizon": (
        ["algo=shac", "env=shac_cartpole", "algo.horizon=241"],
        "horizon 241 exceeds the episode length 240",
    ),
    "shac minibatches": (
        ["algo=shac", "env=shac_cartpole", "algo.critic_minibatches=3"],
        "critic_minibatches=3 must divide num_envs x horizon = 2048",
    ),
    "ild start": (["algo=ild", "algo.start=nope"], "unknown algo.start 'nope'; valid choices: resets, demo"),
    "bc loss": (["algo=bc", "algo.bc_loss=nope"], "unknown algo.bc_loss 'nope'; valid choices: sampled, mean"),
    "ild envs": (["algo=ild", "algo.num_envs=0"], "algo.num_envs must be >= 1, got 0"),
    "ild_l2 with the chamfer distance": (
        ["algo=ild_l2", "env=acrobot", "algo.loss=chamfer"],
        "algo=ild_l2 compares time-aligned states: algo.loss must be one of l2, l2_rms, not 'chamfer'",
    ),
    "demos too short": (["algo=bc", "env=acrobot", "algo.episode_length=100000"], "steps, shorter than the"),
    "no demos": (["algo=bc", "env=acrobot", "algo.demos=0"], "algo.demos must be >= 1, got 0"),
    "demos of another observation": (
        lambda tmp: demo_file(tmp, observation=np.zeros((1, 128, 3), np.float32)),
        "observation size 3, but env 'acrobot' on analytic has",
    ),
    "demos of another action": (
        lambda tmp: demo_file(tmp, action=np.zeros((1, 128, 3), np.float32)),
        "action size 3, but env 'acrobot' on analytic has 1",
    ),
    "demos of another state": (
        lambda tmp: demo_file(tmp, state=np.zeros((1, 128, 3), np.float32)),
        "state size 3, but env 'acrobot' on analytic has 4",
    ),
    "demos of another task": (lambda tmp: demo_file(tmp, task=np.asarray("hopper")), "holds demos of env 'hopper'"),
    "a demo start the task no longer resets to": (moved_start_state, "the demo's start state is not what env"),
}


# In this process, Hydra must not point the logging handlers at the streams pytest captures and then closes.
LEAVE_LOGGING_ALONE = ("hydra/job_logging=none", "hydra/hydra_logging=none")


@pytest.mark.parametrize("name", TRAIN_REFUSALS)
def test_every_refusal_is_one_line_before_any_training(name, tmp_path, capsys, monkeypatch):
    args, words = TRAIN_REFUSALS[name]
    args = args(tmp_path) if callable(args) else args
    monkeypatch.setenv("DIFFRL_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # hardware.devices may add to it
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands its arguments to Hydra through it
    with pytest.raises(SystemExit) as exit_info:
        diffrl_main(["train", *args, "logger.console.progress_bar=false", *LEAVE_LOGGING_ALONE])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and line.startswith("diffrl train: error: ")
    assert words in line
    assert not list(tmp_path.rglob("metrics.jsonl")) and not list(tmp_path.rglob("checkpoints/*"))


def test_a_missing_launcher_plugin_is_named_with_its_extra(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "launcher" in name else real(name, *a))
    with pytest.raises(SystemExit):
        diffrl_main(["train", "-m", "launcher=joblib"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == 'diffrl train: error: launcher=joblib needs its Hydra plugin: pip install -e ".[joblib]"'


@pytest.mark.parametrize("make_dir", ["empty", "never_checkpointed"])
def test_eval_of_a_directory_it_cannot_evaluate_is_one_line(make_dir, tmp_path, capsys, monkeypatch):
    if make_dir == "never_checkpointed":
        (tmp_path / ".hydra").mkdir()
        OmegaConf.save(compose_train("algo=cem", "debug=smoke"), tmp_path / ".hydra" / "config.yaml")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as exit_info:
        diffrl_main(["eval", str(tmp_path), *LEAVE_LOGGING_ALONE])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and line.startswith("diffrl eval: error: ")
