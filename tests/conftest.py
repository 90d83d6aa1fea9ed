"""Shared test set-up: CPU only, float64 available, and JAX's persistent compilation cache so that
repeated compiles of the same programs (across tests and CI runs) cost ~1 s instead of ~15 s."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import jax  # noqa: E402

CACHE_DIR = pathlib.Path(os.environ.get("DIFFRL_JAX_CACHE", pathlib.Path(__file__).parents[1] / ".cache" / "jax"))
jax.config.update("jax_compilation_cache_dir", str(CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_enable_x64", False)
