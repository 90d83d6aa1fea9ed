"""CE-APG speed: time per outer iteration at the paper's settings, and the cost of vmapped seeds.

    python -m benchmarks.bench_apg [--quick] [--out FILE]

1. One CE-APG outer iteration on the acrobot (analytic backend) at the paper's settings: 24
   candidates x 100 Adam steps x 4 start states x 500 steps (+ the normaliser rollout), one seed;
   projected to the paper's 200 iterations. ``--quick`` runs 10 Adam steps and scales linearly
   (the inner loop is a scan, its cost is linear in its length).
2. Seed scaling: the same compiled chunk (quick budget) with 1 and with 8 vmapped seeds; the ratio
   of wall times is the price of 8 seeds in one program (target <= 3x on 2 CPU cores).

Gradient steps/s of the rollout core per backend at the paper's batch (96 = 24 x 4) is measured by
``benchmarks.bench_analytic``. Compile time is reported apart (first call); run time is the best of
``--repeats`` calls with ``block_until_ready``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # XLA logs harmless CPU-feature notes per cached program

import jax  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from benchmarks.timing import time_compiled  # noqa: E402
from diffrl.experiment import seed_keys  # noqa: E402
from diffrl.run import build_experiment, make_chunk_runner  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def time_chunk(cfg, iterations: int, repeats: int) -> tuple[float, float, int]:
    """(compile s, best run s, env steps per seed per iteration) of one compiled chunk."""
    exp = build_experiment(cfg)
    states = jax.jit(jax.vmap(exp.algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    compile_s, best = time_compiled(lambda: make_chunk_runner(exp.algo).lower(states, iterations), (states,), repeats)
    return compile_s, best, exp.algo.env_steps_per_iteration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 Adam steps per candidate, scaled to 100")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "apg.md")
    args = parser.parse_args()
    cache = pathlib.Path(os.environ.get("DIFFRL_JAX_CACHE", pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", str(cache))

    lines = [f"# CE-APG speed ({platform.node()}, {os.cpu_count()} CPU cores, jax {jax.__version__})", ""]
    apg_steps = 10 if args.quick else 100
    paper = compose_train("algo=ce_apg", "env=acrobot", "budget=paper", "num_seeds=1", f"algo.apg_steps={apg_steps}")
    compile_s, run_s, steps = time_chunk(paper, 1, args.repeats)
    per_iteration = run_s * 100 / apg_steps
    lines += [
        "## One outer iteration at the paper's settings (acrobot, analytic, 1 seed)",
        "",
        "| Adam steps timed | compile s | run s | s per iteration (100 steps) | grad steps/s | 200 iterations |",
        "|---|---|---|---|---|---|",
        f"| {apg_steps} | {compile_s:.1f} | {run_s:.2f} | {per_iteration:.1f} | {steps / run_s:,.0f} "
        f"| {per_iteration * 200 / 3600:.1f} h |",
        "",
    ]
    print("\n".join(lines[-6:]), flush=True)

    rows = []
    for seeds in (1, 8):
        cfg = compose_train("algo=ce_apg", "env=acrobot", f"num_seeds={seeds}")
        compile_s, run_s, steps = time_chunk(cfg, 1, args.repeats)
        rows.append((seeds, compile_s, run_s, steps * seeds / run_s))
    ratio = rows[1][2] / rows[0][2]
    lines += [
        "## Seeds as a vmap axis (quick budget, one outer iteration)",
        "",
        "| seeds | compile s | run s | env steps/s (all seeds) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {c:.1f} | {r:.2f} | {sps:,.0f} |" for s, c, r, sps in rows]
    lines += ["", f"8 seeds cost **{ratio:.2f}x** one seed (target <= 3x).", ""]
    print("\n".join(lines[-7:]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
