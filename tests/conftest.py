"""Shared test set-up: CPU only, wandb offline, and JAX's persistent compilation cache so that
repeated compiles of the same programs (across tests, `diffrl` subprocesses and CI runs) cost ~1 s
instead of ~15 s."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Shared with `diffrl` subprocesses (conf/hardware/cpu.yaml reads the same variable).
CACHE_DIR = pathlib.Path(
    os.environ.setdefault("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
)

import jax  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
jax.config.update("jax_enable_x64", False)

REPO = pathlib.Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"


def import_tool(name: str):
    """A script under tools/ as a module (tools/ is not a package), without touching sys.path."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_train(*overrides: str):
    """The real `conf/train.yaml`, composed with overrides (as `diffrl train` would, minus Hydra's run dir)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def compose_with_hydra(*overrides: str):
    """As ``compose_train``, with Hydra's own config (sweeper params, sweep dirs, launcher) included."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def run_diffrl(*args: str, cwd: pathlib.Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the `diffrl` command in a subprocess, with outputs under ``cwd``."""
    env = {**os.environ, "DIFFRL_OUTPUTS": str(cwd / "outputs")}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"diffrl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_metrics(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def deterministic_part(row: dict) -> dict:
    """A metrics row without what the wall clock decides."""
    return {k: v for k, v in row.items() if k not in ("wall_time_s", "steps_per_second")}


@pytest.fixture
def fast_cfg():
    """A seconds-long training config: smoke budget, no wandb, no progress bar."""
    return lambda *overrides: compose_train("debug=smoke", "logger.console.progress_bar=false", *overrides)
