"""How far ILD's, ILD-L2's and BC's rollouts were from the demo during training: the fixed-scale distance
(the demos' own statistics, the same measure for all three; ``docs/ild.md``) at the first logged iteration,
its lowest and its last, per task and method, from every run's ``metrics.jsonl`` (seed means as logged).
``make ild`` runs it on the sweep directory; "falls" is the last below the first.

    python tools/ild_distances.py <sweep dir> [...] [--out <dir>/distance.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import defaultdict

from diffrl.paper_results import TASK_TITLES
from diffrl.tables import job_variants, row_title

METHODS = ("ild", "ild_l2", "bc")  # the algorithms with a distance to the demo, in column order

# A column: (algo, variant), the variant being the overrides that set its runs apart ("" when none do).
Column = tuple[str, str]


def distance_curve(run_dir: pathlib.Path) -> list[tuple[int, float]]:
    """(iteration, fixed-scale distance) of each logged training row (the warm-up's row 0 has none)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(int(r["iteration"]), float(r["distance"])) for r in rows if "distance" in r]


def runs(sweep_dirs: list[pathlib.Path]) -> dict[tuple[str, Column], list[tuple[int, float]]]:
    """(task, column) -> its distance curve, from every finished run under the sweep directories. Runs whose
    overrides differ (a sweep over ``algo.learning_rate``, say) get their own column, labelled as `diffrl table`
    labels its rows; two runs of one column on one task are refused, not silently merged."""
    jobs = []
    for sweep in sweep_dirs:
        for summary_path in sorted(sweep.glob("*/summary.json")):
            summary = json.loads(summary_path.read_text())
            if summary.get("algo") in METHODS and (summary_path.parent / "metrics.jsonl").exists():
                jobs.append((summary_path.parent, summary["env"], summary["algo"]))
    variants = job_variants([job_dir for job_dir, _, _ in jobs])
    curves, sources = {}, {}
    for job_dir, env, algo in jobs:
        key = (env, (algo, variants[job_dir]))
        if key in sources:
            title = row_title(algo, variants[job_dir])
            raise SystemExit(f"two runs of {title} on {env}: {sources[key]} and {job_dir}; pass one of them")
        curve = distance_curve(job_dir)
        if curve:
            curves[key], sources[key] = curve, job_dir
    return curves


def cell(curve: list[tuple[int, float]]) -> str:
    (first_it, first), (last_it, last) = curve[0], curve[-1]
    low_it, low = min(curve, key=lambda p: p[1])
    trend = "falls" if last < first else "**rises**"
    return f"{first:.3f} ({first_it}) → {low:.3f} ({low_it}) → {last:.3f} ({last_it}): {trend}"


def column_order(column: Column) -> tuple[int, str]:
    """ILD's columns first, then ILD-L2's, then BC's; of one method, the run without overrides first, then the
    variants in name order."""
    algo, variant = column
    return METHODS.index(algo), variant


def markdown(curves: dict[tuple[str, Column], list[tuple[int, float]]]) -> str:
    tasks = sorted({task for task, _ in curves}, key=lambda t: TASK_TITLES.get(t, t))
    columns = sorted({column for _, column in curves}, key=column_order)
    by_task = defaultdict(dict)
    for (task, column), curve in curves.items():
        by_task[task][column] = curve
    lines = [
        "Fixed-scale distance of the training rollouts to the demo (the demos' statistics, clipped to ±5, valid "
        "states only; the seeds' mean as logged): first logged iteration → lowest → last, iteration in brackets.",
        "",
        "| task | " + " | ".join(row_title(*column) for column in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for task in tasks:
        cells = [cell(by_task[task][c]) if c in by_task[task] else "–" for c in columns]
        lines.append(f"| {TASK_TITLES.get(task, task)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="markdown file (default: <first sweep dir>/distance.md)")
    args = parser.parse_args(argv)
    curves = runs(args.sweep_dirs)
    if not curves:
        parser.error(f"no ILD, ILD-L2 or BC run with a metrics.jsonl under {', '.join(map(str, args.sweep_dirs))}")
    out = args.out or args.sweep_dirs[0] / "distance.md"
    out.write_text(markdown(curves))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
