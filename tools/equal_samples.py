"""Two runs' evaluation curves side by side at equal env steps, from their ``metrics.jsonl``.

A compiled run (SHAC, APG, ...) logs its periodic evaluations as ``eval_return`` (``eval.every_chunks``); an
external trainer (Brax's or SB3's PPO/SAC) logs each progress report's deterministic evaluation as ``return``,
one row per seed (``seed_index``). Each curve is the mean over the run's seeds at each env-step count. At every
env-step count where either run evaluated, prints both curves there, reading a curve between two of its
evaluations by linear interpolation (marked "≈"; nothing is read beyond a curve's last evaluation).

    python tools/equal_samples.py --a <SHAC run dir> --b <PPO run dir> [--names SHAC PPO] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np


def evaluation_curve(run_dir: pathlib.Path) -> dict[int, float]:
    """env steps -> mean evaluation return over the run's seeds."""
    rows = [json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    points: dict[int, list[float]] = {}
    for row in rows:
        if "seed_index" in row:  # an external trainer: every report is a deterministic evaluation
            points.setdefault(int(row["env_steps"]), []).append(float(row["return"]))
        elif "eval_return" in row:
            points.setdefault(int(row["env_steps"]), []).extend(float(r) for r in row["eval_return"])
    return {steps: float(np.mean(returns)) for steps, returns in sorted(points.items())}


def read_at(curve: dict[int, float], steps: int) -> tuple[float, bool] | None:
    """(the curve's return at ``steps``, whether it was interpolated); None outside the curve."""
    if steps in curve:
        return curve[steps], False
    xs = list(curve)
    if not xs or steps < xs[0] or steps > xs[-1]:
        return None
    return float(np.interp(steps, xs, [curve[x] for x in xs])), True


def markdown(a: dict[int, float], b: dict[int, float], names: tuple[str, str]) -> str:
    lines = [f"| env steps | {names[0]} | {names[1]} | {names[0]} − {names[1]} |", "|---|---|---|---|"]
    for steps in sorted(set(a) | set(b)):
        read = [read_at(curve, steps) for curve in (a, b)]
        cells = ["–" if r is None else f"{'≈ ' if r[1] else ''}{r[0]:.1f}" for r in read]
        gap = "–" if None in read else f"{read[0][0] - read[1][0]:+.1f}"
        lines.append(f"| {steps:,} | {cells[0]} | {cells[1]} | {gap} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=pathlib.Path, required=True, help="a run directory")
    parser.add_argument("--b", type=pathlib.Path, required=True, help="another run directory")
    parser.add_argument("--names", nargs=2, default=("A", "B"))
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    text = markdown(evaluation_curve(args.a), evaluation_curve(args.b), tuple(args.names))
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
