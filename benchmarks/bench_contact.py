"""Gradients through contact: forward and forward+backward speed of every task on every physics pipeline.

    python -m benchmarks.bench_contact [--quick] [--tasks ...] [--backends ...] [--out FILE] [--docs]

For each task x pipeline the task supports (``diffrl.envs.REGISTRY``: ``generalized``, ``mjx``,
``spring``, ``positional``, and ``analytic`` for the swing-ups), in float32: the mean undiscounted return
of a linear tanh policy (``mlp`` with no hidden layer, identity normaliser) over 64 start states x 32
steps (``diffrl.rollout.episode_return``, steps after a termination masked), forward and
forward+backward (``jax.grad`` w.r.t. the policy parameters), with ``diffrl.gradients.speed``:

- **steps/s**: control steps summed over the batch per second, best of ``--repeats`` calls after one
  warm-up call;
- **compile s**: lowering + XLA compile of each program (a load from the persistent cache when warm);
- **finite** / **norm**: whether every entry of the float32 gradient is finite, and its global norm.

``--quick`` measures inverted_pendulum and hopper on generalized and mjx (4 rows, ~5 min cold on 2
cores); the full run (every pair, ~45 rows) takes hours on 2 cores because each pair compiles two
programs. Each row is appended to ``<out>.jsonl`` as soon as it is measured, and ``--resume`` skips the
rows already there, so a long run can be stopped and continued. ``--docs`` also writes the table to
``docs/results/contact_bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import traceback

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

from diffrl.envs import REGISTRY, make_env  # noqa: E402
from diffrl.experiment import machine_description  # noqa: E402
from diffrl.gradients import reset_batch, speed  # noqa: E402
from diffrl.networks import make_mlp_policy  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "contact.md"
DOCS_OUT = ROOT / "docs" / "results" / "contact_bench.md"
PIPELINES = ("generalized", "mjx", "spring", "positional", "analytic")
QUICK_TASKS, QUICK_PIPELINES = ("inverted_pendulum", "hopper"), ("generalized", "mjx")


def measuring_order(pair: tuple[str, str]) -> tuple:
    """Brax's suite on generalized and mjx first (the pipelines a task trains on), then spring and
    positional, then the swing-ups: a long run that is stopped early has measured what matters most."""
    task, backend = pair
    return (REGISTRY[task].suite != "brax", backend not in QUICK_PIPELINES, task, PIPELINES.index(backend))


def measure(task: str, backend: str, num_envs: int, horizon: int, repeats: int) -> dict:
    start = time.perf_counter()
    env = make_env(task, backend)
    policy = make_mlp_policy(env.observation_size, env.action_size, hidden_sizes=())  # linear + tanh
    params = policy.init(jax.random.PRNGKey(0))
    starts = reset_batch(env, jax.random.PRNGKey(1), num_envs)
    out = speed(env, policy, params, policy.init_normalizer(), starts, horizon, repeats)
    return {
        "task": task,
        "backend": backend,
        "fwd_steps_per_s": out["fwd"].steps_per_s,
        "grad_steps_per_s": out["grad"].steps_per_s,
        "fwd_compile_s": out["fwd"].compile_s,
        "grad_compile_s": out["grad"].compile_s,
        "grad_finite": out["grad_finite"],
        "grad_norm": out["grad_norm"],
        "return": out["return"],
        "wall_s": time.perf_counter() - start,
    }


def markdown(rows: list[dict], command: str, num_envs: int, horizon: int, load: tuple[float, float]) -> str:
    lines = [
        "# Gradients through contact: speed and float32 finiteness per task x pipeline",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_description()}; load average {load[0]:.1f} at start, {load[1]:.1f} at the last row "
        "(shared with other jobs: read differences below ~1.5x as noise).  ",
        f"{num_envs} envs x {horizon} steps, linear tanh policy, float32; steps/s = control steps summed over "
        "the batch per second (best call after a warm-up); compile = lowering + XLA compile (or cache load).",
        "",
        "| task | pipeline | fwd steps/s | fwd+bwd steps/s | compile fwd / fwd+bwd (s) | gradient finite (f32) "
        "| gradient norm | mean return |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['backend']} | — | — | — | error: {r['error']} | — | — |")
            continue
        lines.append(
            f"| {r['task']} | {r['backend']} | {r['fwd_steps_per_s']:,.0f} | {r['grad_steps_per_s']:,.0f} "
            f"| {r['fwd_compile_s']:.1f} / {r['grad_compile_s']:.1f} | {'yes' if r['grad_finite'] else '**no**'} "
            f"| {r['grad_norm']:.3g} | {r['return']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="inverted_pendulum and hopper on generalized and mjx")
    parser.add_argument("--tasks", nargs="+", choices=sorted(REGISTRY))
    parser.add_argument("--backends", nargs="+", choices=PIPELINES)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in <out>.jsonl")
    parser.add_argument("--docs", action="store_true", help=f"also write the table to {DOCS_OUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    cache = os.environ.get("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

    tasks = args.tasks or (list(QUICK_TASKS) if args.quick else sorted(REGISTRY))
    backends = args.backends or (list(QUICK_PIPELINES) if args.quick else list(PIPELINES))
    pairs = sorted(((t, b) for t in tasks for b in backends if b in REGISTRY[t].backends), key=measuring_order)
    jsonl = args.out.with_suffix(".jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if args.resume and jsonl.exists() else []
    done = {(r["task"], r["backend"]) for r in rows}
    if not args.resume:
        jsonl.write_text("")
    command = "python -m benchmarks.bench_contact " + " ".join(argv if argv is not None else sys.argv[1:])
    load_start = os.getloadavg()[0]
    for task, backend in pairs:
        if (task, backend) in done:
            continue
        print(f"# {task} / {backend} ...", flush=True)
        try:
            row = measure(task, backend, args.num_envs, args.horizon, args.repeats)
        except Exception as err:  # one pair failing must not lose the others
            traceback.print_exc()
            row = {"task": task, "backend": backend, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"}
        jax.clear_caches()
        rows.append(row)
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.sort(key=lambda r: (r["task"], PIPELINES.index(r["backend"])))
        report = markdown(rows, command.strip(), args.num_envs, args.horizon, (load_start, os.getloadavg()[0]))
        args.out.write_text(report)
        if args.docs:
            DOCS_OUT.parent.mkdir(parents=True, exist_ok=True)
            DOCS_OUT.write_text(report)
        print(report.splitlines()[-1], flush=True)
    print(markdown(rows, command.strip(), args.num_envs, args.horizon, (load_start, os.getloadavg()[0])))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
