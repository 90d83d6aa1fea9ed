"""SHAC's speed on SHAC's tasks: one training iteration (a 32-step window on every env, forward and backward
through the physics, plus the critic's 16 x 4 minibatch updates), and the projected time of the paper's budget.

    python -m benchmarks.bench_shac [--quick] [--tasks ...] [--out FILE]

Each task runs with its own configuration exactly as ``diffrl train algo=shac env=<task> num_seeds=1`` builds
it (``conf/tuned/<task>_shac.yaml``: the paper's env count, network sizes and learning rates) on the task's
default backend, in float32. Reported per task:

- **iteration s**: one jitted ``train_step``, best of ``--repeats`` calls after a warm-up call;
- **steps/s**: env steps of one iteration (envs x 32) per second;
- **compile s**: lowering + XLA compile of the iteration (a load from the persistent cache when warm);
- **paper budget**: the paper's epochs x iteration s, for one seed (compile excluded). The paper: 4.1M
  steps on Ant in ~40 min on a GPU.

``--quick`` measures shac_cartpole and shac_hopper (~4 min cold on 2 cores); the default measures all five.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from diffrl.experiment import configure_jax, machine_description  # noqa: E402
from diffrl.paper_results import SHAC_TASKS  # noqa: E402
from diffrl.run import build_experiment  # noqa: E402
from diffrl.tables import format_duration  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "shac.md"
QUICK_TASKS = ("shac_cartpole", "shac_hopper")


def compose_config(task: str, budget: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[f"env={task}", "algo=shac", f"budget={budget}", "num_seeds=1", "logger.wandb.mode=disabled"],
        )


def measure(task: str, repeats: int) -> dict:
    cfg = compose_config(task, "paper")
    configure_jax(cfg.hardware)
    exp = build_experiment(cfg)
    state = jax.jit(exp.algo.init)(jax.random.PRNGKey(0))
    step = jax.jit(exp.algo.train_step)
    start = time.perf_counter()
    compiled = step.lower(state).compile()
    compile_s = time.perf_counter() - start
    state, _ = jax.block_until_ready(compiled(state))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(compiled(state))
        times.append(time.perf_counter() - start)
    iteration_s = min(times)
    steps = exp.algo.env_steps_per_iteration
    return {
        "task": task,
        "backend": cfg.env.backend,
        "envs": int(cfg.algo.num_envs),
        "iteration_s": iteration_s,
        "steps_per_s": steps / iteration_s,
        "compile_s": compile_s,
        "paper_iterations": exp.iterations,
        "paper_s": exp.iterations * iteration_s,
        "finite": bool(jax.numpy.isfinite(metrics["grad_norm"])),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        f"SHAC iteration speed ({machine_description()}; float32, 1 seed, `python -m benchmarks.bench_shac`).",
        "",
        "| task | backend | envs | iteration s | steps/s | compile s | paper budget (1 seed) | finite grad |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = f"{r['paper_iterations']} it = {format_duration(r['paper_s'])}"
        lines.append(
            f"| {r['task']} | {r['backend']} | {r['envs']} | {r['iteration_s']:.3f} | {r['steps_per_s']:,.0f} | "
            f"{r['compile_s']:.0f} | {budget} | {r['finite']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_TASKS)}")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    tasks = args.tasks or (QUICK_TASKS if args.quick else SHAC_TASKS)
    rows = []
    for task in tasks:
        rows.append(measure(task, args.repeats))
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows))
    print(markdown(rows))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
