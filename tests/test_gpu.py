"""`hardware=gpu` on a CUDA device (`pip install -e ".[gpu]"`): the CLI trains there and the closed-form
physics agrees with the CPU. Marked `gpu`: deselected by default; `make test-gpu` (`pytest -m gpu`) runs them,
and they fail, not skip, where JAX sees no CUDA device: a GPU check that passes without a GPU proves nothing."""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_diffrl

pytestmark = pytest.mark.gpu
# This test process keeps JAX on the CPU (conftest sets JAX_PLATFORMS=cpu); a child that inherited it
# could never see the GPU.
GPU_ENV = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}


@functools.cache
def cuda_devices() -> tuple[int, str]:
    """(CUDA devices JAX sees, why none when none), asked in a subprocess."""
    code = "import jax; print(len(jax.devices('cuda')))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=GPU_ENV, timeout=300
    )
    if proc.returncode == 0 and proc.stdout.strip().isdigit():
        return int(proc.stdout.strip()), ""
    return 0, (proc.stderr.strip().splitlines() or ["no output"])[-1]


@pytest.fixture(autouse=True)
def needs_a_gpu():
    count, why = cuda_devices()
    if not count:
        pytest.fail(f'no CUDA device visible to JAX ({why}); needs a GPU and `pip install -e ".[gpu]"`')


@pytest.mark.parametrize(
    "overrides",
    [
        ("algo=ce_apg", "env=acrobot", "iterations=2", "algo.apg_steps=5"),
        ("algo=ppo", "env=acrobot", "iterations=40960"),
    ],
    ids=["ce_apg", "ppo"],
)
def test_training_runs_on_the_gpu(overrides, tmp_path):
    run_diffrl(
        "train",
        "hardware=gpu",
        "num_seeds=2",
        "eval.episodes=2",
        "logger.wandb.enabled=false",
        *overrides,
        cwd=tmp_path,
        timeout=900,
    )
    (run_dir,) = (tmp_path / "outputs").glob("train/*/*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and " on gpu" in summary["machine"]
    assert np.all(np.isfinite(summary["final_return"]["per_seed"]))


def test_closed_form_physics_agrees_between_gpu_and_cpu():
    code = """
import jax, jax.numpy as jnp, numpy as np
from diffrl.envs import make_env
env = make_env("acrobot", "analytic")
def rollout(key):
    state = env.reset(key)
    def step(state, t):
        state = env.step(state, jnp.sin(0.1 * t) * jnp.ones(env.action_size))
        return state, state.reward
    return jax.lax.scan(step, state, jnp.arange(200.0))[1]
key = jax.random.PRNGKey(0)
on = {p: np.asarray(jax.jit(rollout, device=jax.devices(p)[0])(key)) for p in ("cpu", "cuda")}
print(float(np.max(np.abs(on["cpu"] - on["cuda"]) / (1 + np.abs(on["cpu"])))))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=GPU_ENV, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-3  # float32 on two devices: round-off only
