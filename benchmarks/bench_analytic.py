"""Closed-form dynamics vs Brax's pipelines: steps/s of a policy return and of its gradient, and memory.

    python -m benchmarks.bench_analytic [--quick] [--out FILE]

For each task and backend: the mean undiscounted return of the paper's GRU policy over a batch of
start states (96 = 24 candidates x 4 starts, as CE-APG; and 1024), forward and forward+backward
(``jax.grad`` w.r.t. the policy parameters). Compile time (lowering + XLA compile, persistent cache
enabled) is timed apart from steady state (best of N calls, ``block_until_ready``). Steps/s counts
control steps (one policy step + ``substeps`` physics steps) times batch. Brax runs a shorter horizon
than the closed form (a scan's cost is linear in its length; one row checks it). Peak memory is XLA's
temp allocation of the compiled 500-step gradient, with and without ``jax.checkpoint`` of the physics.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from diffrl.envs import TASKS, AnalyticSwingUpEnv, SwingUpEnv  # noqa: E402
from diffrl.experiment import machine_description  # noqa: E402
from diffrl.gradients import policy_return  # noqa: E402
from diffrl.networks import make_gru_policy  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Case:
    task: str
    backend: str  # "analytic", "analytic (no remat)", "generalized" or "mjx"
    batch: int
    horizon: int


@dataclasses.dataclass(frozen=True)
class Timing:
    compile_s: float
    run_s: float
    steps_per_s: float
    temp_bytes: int


def make_env(task: str, backend: str):
    if backend.startswith("analytic"):
        return AnalyticSwingUpEnv(TASKS[task], remat=backend == "analytic")
    return SwingUpEnv(TASKS[task], backend=backend)


def make_loss(case: Case):
    """(params) -> mean return over the batch of start states, and the params to call it with."""
    env = make_env(case.task, case.backend)
    policy = make_gru_policy(env.observation_size, env.action_size)
    params, normalizer = policy.init(jax.random.PRNGKey(0)), policy.init_normalizer()
    starts = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(1), case.batch))

    def loss(params):
        returns = jax.vmap(lambda s: policy_return(env, policy, params, normalizer, s, case.horizon))(starts)
        return jnp.mean(returns)

    return loss, params


def measure(fn, args, steps: int, repeats: int) -> Timing:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return Timing(compile_s, best, steps / best, int(getattr(memory, "temp_size_in_bytes", -1)))


def run_case(case: Case, repeats: int, log) -> dict[str, Timing]:
    loss, params = make_loss(case)
    steps = case.batch * case.horizon
    out = {}
    for mode, fn in (("fwd", loss), ("grad", jax.grad(loss))):
        out[mode] = measure(fn, (params,), steps, repeats)
        t = out[mode]
        name = f"{case.task} {case.backend} batch {case.batch} horizon {case.horizon} {mode}"
        log(f"  {name}: compile {t.compile_s:.1f} s, run {t.run_s * 1e3:.1f} ms, {t.steps_per_s:,.0f} steps/s")
    return out


def memory_of_gradient(task: str, batch: int, horizon: int, remat: bool) -> int:
    backend = "analytic" if remat else "analytic (no remat)"
    loss, params = make_loss(Case(task, backend, batch, horizon))
    memory = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
    return int(memory.temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short horizons, double pendulum, generalized only")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "analytic.md")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls; the best one counts")
    args = parser.parse_args()

    cache = os.environ.get("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)  # the tests' and `diffrl train`'s cache
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    # mjx differentiates ~2x slower than generalized on CPU (measured), so it runs on one task only.
    if args.quick:
        tasks, mjx_tasks = ["double_pendulum_swingup"], []
        horizon, brax_horizon = {96: 100, 1024: 100}, {96: 20, 1024: 10}
    else:
        tasks, mjx_tasks = sorted(TASKS), ["double_pendulum_swingup"]
        horizon, brax_horizon = {96: 500, 1024: 500}, {96: 100, 1024: 20}

    lines: list[str] = []
    log = lambda msg: (print(msg, flush=True), lines.append(msg))
    load_before = os.getloadavg()
    log(f"machine: {machine_description()}; load average at start {load_before[0]:.1f}")

    cases = []
    for task in tasks:
        for batch in (96, 1024):
            cases.append(Case(task, "analytic", batch, horizon[batch]))
            cases.append(Case(task, "analytic (no remat)", batch, horizon[batch]))
            cases.append(Case(task, "generalized", batch, brax_horizon[batch]))
            if task in mjx_tasks and batch == 96:
                cases.append(Case(task, "mjx", batch, brax_horizon[batch]))
    if not args.quick:  # Brax's steps/s does not depend on the horizon: check once at the full 500
        cases.append(Case("double_pendulum_swingup", "generalized", 96, 500))
    results = {}
    for case in cases:
        repeats = args.repeats if case.backend.startswith("analytic") else max(1, args.repeats - 1)
        results[case] = run_case(case, repeats, log)

    memory_horizon = horizon[96]
    memory = {
        (task, batch, remat): memory_of_gradient(task, batch, memory_horizon, remat)
        for task in tasks
        for batch in (96, 1024)
        for remat in (False, True)
    }
    load_after = os.getloadavg()

    table = [
        "| task | batch | backend | horizon | fwd steps/s | fwd+bwd steps/s | compile fwd / grad (s) "
        "| fwd+bwd speed-up vs fastest Brax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, timing in results.items():
        rivals = [
            t["grad"].steps_per_s
            for c, t in results.items()
            if (c.task, c.batch) == (case.task, case.batch)
            and not c.backend.startswith("analytic")
            and c.horizon == brax_horizon[c.batch]
        ]
        ratio = f"{timing['grad'].steps_per_s / max(rivals):.0f}x" if rivals else "-"
        table.append(
            f"| {case.task} | {case.batch} | {case.backend} | {case.horizon} "
            f"| {timing['fwd'].steps_per_s:,.0f} | {timing['grad'].steps_per_s:,.0f} "
            f"| {timing['fwd'].compile_s:.1f} / {timing['grad'].compile_s:.1f} | {ratio} |"
        )
    mem_table = [
        f"| task | batch | temp memory of the {memory_horizon}-step gradient: no checkpoint "
        "| with jax.checkpoint of each control step's physics (default) |",
        "|---|---|---|---|",
    ]
    for task in tasks:
        for batch in (96, 1024):
            mb = lambda remat: memory[(task, batch, remat)] / 2**20  # noqa: B023
            mem_table.append(f"| {task} | {batch} | {mb(False):,.1f} MiB | {mb(True):,.1f} MiB |")

    command = "python -m benchmarks.bench_analytic" + (" --quick" if args.quick else "")
    report = [
        "# Closed-form dynamics vs Brax pipelines",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_description()}; load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end "
        "(shared with other jobs during the run).",
        "",
        *table,
        "",
        *mem_table,
        "",
        "<details><summary>log</summary>",
        "",
        "```",
        *lines,
        "```",
        "</details>",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print("\n".join(report[:-8]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
