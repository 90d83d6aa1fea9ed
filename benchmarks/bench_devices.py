"""One job on 1 device vs sharded over several (``hardware.devices``), side by side in one run.

    python -m benchmarks.bench_devices [--quick] [--devices 2] [--out FILE] [-- extra diffrl overrides]

Runs ``diffrl train`` (default: CE-APG on the acrobot, quick budget, 8 seeds) three times, each in its own
process that sees the same number of XLA host devices: on 1 device as configured by default (Eigen's matmul
threads), on 1 device computing on one thread (what each device of a sharded CPU run does), and sharded over
``--devices``. Reported: compile time, training time (wall clock minus compile), env steps per second, the
speed ratio to the default 1-device run, and whether the final returns equal the one-thread 1-device run's.
``--quick``: 6 of the quick budget's 12 iterations (~4 min in all on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from diffrl.devices import HOST_DEVICE_FLAG, SINGLE_THREAD_FLAG

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "devices.md"


def train(devices: int, visible: int, flags: str, overrides: list[str], outputs: pathlib.Path) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} {HOST_DEVICE_FLAG}={visible} {flags}".strip()
    env = {**os.environ, "DIFFRL_OUTPUTS": str(outputs), "XLA_FLAGS": flags}
    args = [f"hardware.devices={devices}", "logger.wandb.enabled=false", "logger.console.progress_bar=false"]
    subprocess.run([sys.executable, "-m", "cli.main", "train", *args, *overrides], cwd=ROOT, env=env, check=True)
    (summary_file,) = outputs.glob("train/*/*/summary.json")
    return json.loads(summary_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2, help="the sharded run's device count")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="6 iterations instead of the budget's")
    parser.add_argument("overrides", nargs="*", help="diffrl train overrides (default: CE-APG, acrobot, quick)")
    args = parser.parse_args()
    overrides = (["iterations=6"] if args.quick else []) + args.overrides

    # (label, hardware.devices, extra XLA flags): one device as configured by default (Eigen's threads), one
    # device on one thread (what each device of a sharded CPU run uses), and the sharded run.
    setups = [
        ("1", 1, ""),
        ("1, one thread", 1, SINGLE_THREAD_FLAG),
        (str(args.devices), args.devices, ""),
    ]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, devices, flags in setups:
            runs[label] = train(devices, args.devices, flags, overrides, pathlib.Path(tmp) / str(len(runs)))
    one = runs["1"]
    lines = [
        "`" + " ".join(["python -m benchmarks.bench_devices", *sys.argv[1:]]) + "`",
        f"({one['algo']} on {one['env']}, {one['budget']} budget, {one['num_seeds']} seeds, "
        f"{one['iterations']} iterations; {one['machine']}; every process sees {args.devices} XLA devices).",
        "",
        "| hardware.devices | compile s | training s | env steps/s | speed vs 1 device "
        "| final returns vs 1 device, one thread |",
        "|---|---|---|---|---|---|",
    ]
    one_train_s = one["wall_clock_s"] - one["compile_time_s"]
    reference = runs["1, one thread"]["final_return"]["per_seed"]
    for label, summary in runs.items():
        train_s = summary["wall_clock_s"] - summary["compile_time_s"]
        steps = summary["env_steps_per_seed"] * summary["num_seeds"]
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(summary["final_return"]["per_seed"], reference))
        lines.append(
            f"| {label} | {summary['compile_time_s']:.1f} | {train_s:.1f} | {steps / train_s:,.0f} | "
            f"{one_train_s / train_s:.2f}x | {'identical' if diff == 0 else f'max rel. diff {diff:.1e}'} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
