"""Timing of compiled JAX programs, shared by the benchmarks (no diffrl import: a benchmark may time the
code of another commit)."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax


def time_compiled(lower: Callable[[], jax.stages.Lowered], args: tuple, repeats: int) -> tuple[float, float]:
    """(seconds to lower and compile, best of ``repeats`` calls): each call waits for its results."""
    t0 = time.perf_counter()
    run = lower().compile()
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best
