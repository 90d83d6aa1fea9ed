"""Resume after SIGKILL, bit for bit, for every in-repo algorithm: a `diffrl train` killed right after a
checkpoint and continued with `diffrl train resume=<dir>` ends exactly where an uninterrupted run of the same
config ends: the same metrics, the same final evaluation, the same final train state (parameters, optimiser
states, normaliser, PRNG keys, MJX state). Same program, same shapes, same machine: bit for bit is what XLA
promises here, so nothing is compared to a tolerance.

The killed run holds after its first checkpoint (``DIFFRL_HOLD_AT_CHECKPOINT``) until the test kills it, so
the kill never races the machine's speed.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from diffrl.run import HOLD_AT_CHECKPOINT

from conftest import REPO, deterministic_part, read_metrics, run_diffrl

# Two iterations, a checkpoint after each: killed after the first, the resumed run does the second, which
# reads everything the first left (optimiser moments, the normaliser, the envs SHAC carries on, keys).
SMALL = (
    "debug=smoke",
    "iterations=2",
    "chunk_iterations=1",
    "logger.console.progress_bar=false",
)
# The smallest run of each algorithm that still exercises all of its state.
ALGOS = {
    "cem": ("algo=cem", "env=acrobot", "algo.population=6", "algo.elites=2"),
    "ce_apg": (
        "algo=ce_apg",
        "env=acrobot",
        "algo.population=4",
        "algo.elites=2",
        "algo.apg_steps=2",
        "algo.score_window=2",
        "algo.starts_per_step=1",
    ),
    "papg": ("algo=papg", "env=acrobot", "algo.runs=4", "algo.steps_per_iteration=2", "algo.starts_per_step=1"),
    "shac": ("algo=shac", "env=shac_cartpole", "algo.num_envs=4", "algo.horizon=8", "algo.critic_iterations=2"),
    "shac_mjx": ("algo=shac", "env=hopper", "algo.num_envs=4", "algo.horizon=8", "algo.critic_iterations=2"),
    "bptt": ("algo=bptt", "env=shac_cartpole", "algo.num_envs=4"),
    "ild": ("algo=ild", "env=acrobot", "algo.num_envs=2", "algo.bc_steps=5"),
    "bc": ("algo=bc", "env=acrobot", "algo.num_envs=2", "algo.steps_per_iteration=2"),
}
# The fast suite runs one of each kind of state (a population, an actor-critic with its envs, a warm-up and
# Adam); the rest are slow (`make test-slow`). CEM's resume is also in the fast suite: test_records.py.
FAST = ("ce_apg", "shac", "ild")


def start_held_run(outputs, overrides, log_file):
    """`diffrl train` in a subprocess that holds after its first checkpoint until it is killed."""
    env = {**os.environ, "DIFFRL_OUTPUTS": str(outputs), HOLD_AT_CHECKPOINT: "1"}
    cmd = [sys.executable, "-m", "cli.main", "train", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_until_held(proc, outputs, output_file, timeout=1800):
    """The run directory of ``proc`` once its log says it holds at its checkpoint."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it held: {output_file.read_text()[-3000:]}")
        for log in outputs.glob("train/*/*/train.log"):
            if "holding after the checkpoint of iteration 1" in log.read_text():
                return log.parent
        time.sleep(0.05)
    raise AssertionError(f"the run never held at its checkpoint: {output_file.read_text()[-3000:]}")


def final_train_state(run_dir):
    """The last checkpoint's train state and host counters, as saved (no template: nothing rebuilt)."""
    manager = ocp.CheckpointManager(run_dir / "checkpoints")
    try:
        args = ocp.args.Composite(state=ocp.args.StandardRestore(), host=ocp.args.JsonRestore())
        restored = manager.restore(manager.latest_step(), args=args)
    finally:
        manager.close()
    return jax.tree.map(np.asarray, restored["state"]), restored["host"]


def assert_same_tree(got, want):
    paths = lambda tree: [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    assert paths(got) == paths(want)
    for path, a, b in zip(paths(want), jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b, err_msg=path)


@pytest.mark.parametrize(
    "algo", [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in ALGOS], ids=list(ALGOS)
)
def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_run_bit_for_bit(algo, tmp_path):
    overrides = (*SMALL, *ALGOS[algo])
    run_diffrl("train", *overrides, cwd=tmp_path / "clean", timeout=1800)  # first: it fills the compile cache
    (clean_dir,) = (tmp_path / "clean" / "outputs").glob("train/*/*")

    killed = tmp_path / "killed" / "outputs"
    output = tmp_path / "killed.out"
    with output.open("w") as output_file:
        proc = start_held_run(killed, overrides, output_file)
        try:
            run_dir = wait_until_held(proc, killed, output)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (run_dir / "summary.json").exists()
    assert [r["iteration"] for r in read_metrics(run_dir)] == [*([0] if algo == "ild" else []), 1]

    run_diffrl("train", f"resume={run_dir}", cwd=tmp_path / "killed", timeout=1800)
    log = (run_dir / "train.log").read_text()
    assert "resumed from iteration 1" in log

    resumed, clean = read_metrics(run_dir), read_metrics(clean_dir)
    assert [r["iteration"] for r in resumed] == [r["iteration"] for r in clean]  # nothing lost, nothing repeated
    without_timing = lambda row: {k: v for k, v in deterministic_part(row).items() if k != "warmup_s"}
    assert [without_timing(r) for r in resumed] == [without_timing(r) for r in clean]
    if algo == "ild":  # the behaviour-cloning warm-up ran once, before the kill, and never again
        assert log.count("warm-up:") == 1 and [r["iteration"] for r in resumed][:2] == [0, 1]

    summary = lambda d: json.loads((d / "summary.json").read_text())
    outcome = ("final_return", "final_episode_length", "final_train_return", "env_steps_per_seed", "iterations")
    assert summary(run_dir)["status"] == "completed"
    assert {k: summary(run_dir).get(k) for k in outcome} == {k: summary(clean_dir).get(k) for k in outcome}

    (state, host), (clean_state, clean_host) = final_train_state(run_dir), final_train_state(clean_dir)
    assert (host["iteration"], host["chunk"]) == (clean_host["iteration"], clean_host["chunk"]) == (2, 2)
    assert_same_tree(state, clean_state)
