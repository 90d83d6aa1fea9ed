"""Training throughput of the baselines: Brax's jitted PPO/SAC vs stable-baselines3's, in one run.

    python -m benchmarks.bench_baselines [--quick] [--out FILE] [--env NAME] [--backend B]
                                         [--hardware cpu|gpu] [--num-envs N]

Each agent trains one seed through ``diffrl train`` (the real runner and configs) on the same task
with the same number of envs; the figure is env steps/s *during training*, from the progress reports
in ``metrics.jsonl``: Brax's own ``training/sps`` (its timed training epochs) and, for SB3, steps
between reports over the time between them minus the evaluation. The first training report of each
run is dropped (it holds the compile, or SB3's warm-up), the median of the rest is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

DEFAULT_OUT = pathlib.Path(__file__).parent / "results" / "baselines.md"
CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"

# name -> (algo overrides, env steps per seed (full, quick)); every agent runs NUM_ENVS envs.
CASES = {
    "ppo": (
        ["unroll_length=20", "num_minibatches=8", "batch_size=64", "num_updates_per_batch=4"],
        (204800, 81920),
    ),
    "sb3_ppo": (["n_steps=160", "batch_size=1280", "n_epochs=4"], (40960, 20480)),
    "sac": (["grad_updates_per_step=1"], (51200, 25600)),
    "sb3_sac": (["gradient_steps=1"], (12800, 6400)),
}
NUM_ENVS = 64


def enable_compilation_cache() -> None:
    import jax

    cache = os.environ.get("DIFFRL_JAX_CACHE", str(pathlib.Path.home() / ".cache" / "diffrl" / "jax"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def training_rate(name: str, args) -> dict:
    from hydra import compose, initialize_config_dir

    from diffrl.run import train

    options, steps = CASES[name]
    overrides = [
        f"algo={name}",
        f"env={args.env}",
        f"env.backend={args.backend}",
        f"hardware={args.hardware}",
        "num_seeds=1",
        "eval.episodes=1",
        "logger.wandb.enabled=false",
        "logger.console.progress_bar=false",
        f"iterations={steps[args.quick]}",
        f"algo.num_envs={args.num_envs}",
        "algo.num_evals=5",
        *[f"algo.{o}" for o in options],
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        train(cfg, pathlib.Path(run_dir))
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_second"] for r in rows if r.get("steps_per_second")]
    steady = rates[1:] or rates
    return {
        "name": name,
        "sps": statistics.median(steady),
        "reports": len(steady),
        "wall_s": wall,
        "env_steps": rows[-1]["env_steps"],
    }


def render(results: dict[str, dict], args, started: str) -> str:
    lines = [
        "# Baselines: training throughput, Brax (jitted) vs stable-baselines3",
        "",
        f"`python -m benchmarks.bench_baselines{' --quick' if args.quick else ''} --env {args.env} "
        f"--backend {args.backend}` — {started}, {platform.node()}, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), JAX on CPU.",
        "",
        f"Task `{args.env}` ({args.backend} backend, {args.hardware}), {args.num_envs} envs for every agent, "
        "one seed each; "
        "env steps/s "
        "during training (median over progress reports after the first).",
        "",
        "| agent | Brax env steps/s | SB3 env steps/s | Brax / SB3 |",
        "|---|---|---|---|",
    ]
    for agent, (brax, sb3) in {"PPO": ("ppo", "sb3_ppo"), "SAC": ("sac", "sb3_sac")}.items():
        b, s = results[brax], results[sb3]
        lines.append(f"| {agent} | {b['sps']:,.0f} | {s['sps']:,.0f} | {b['sps'] / s['sps']:.1f}x |")
    lines += ["", "| run | env steps | wall clock (s, incl. compile and evaluations) |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['env_steps']:,} | {r['wall_s']:.0f} |" for r in results.values()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer env steps per run")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--env", default="cartpole_swingup")
    parser.add_argument("--backend", default="analytic")
    parser.add_argument("--hardware", default="cpu", help="conf/hardware choice (gpu: Brax on the accelerator)")
    parser.add_argument("--num-envs", type=int, default=NUM_ENVS, help="envs of every agent")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    enable_compilation_cache()
    started = time.strftime("%Y-%m-%d %H:%M")
    results = {}
    for name in CASES:  # one after another: the agents never share the CPU with each other
        results[name] = training_rate(name, args)
        print(f"{name}: {results[name]['sps']:,.0f} env steps/s", flush=True)
    text = render(results, args, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
