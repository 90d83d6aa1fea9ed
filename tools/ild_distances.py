"""How far ILD's, ILD-L2's and BC's rollouts were from the demo during training: the fixed-scale distance
(the demos' own statistics, the same measure for all three; ``docs/ild.md``) at the first logged iteration,
its lowest and its last, per task and method, from every run's ``metrics.jsonl`` (seed means as logged).
``make ild`` runs it on the sweep directory; "falls" is the last below the first.

The last column is a reference: the same distance of the expert's own *other* kept episodes (the demo file's
episodes after the imitated ones, each from its own random start) to the imitated demo: how close the expert
itself comes from other start states. Not a floor (a policy can come closer), and not comparable where the
episodes differ in more than their start (the reacher's targets).

    python tools/ild_distances.py <sweep dir> [...] [--out <dir>/distance.md]
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections import defaultdict

import numpy as np

from diffrl.demo_file import default_demo_path
from diffrl.paper_results import TASK_TITLES
from diffrl.tables import job_variants, row_title

METHODS = ("ild", "ild_l2", "bc")  # the algorithms with a distance to the demo, in column order

# A column: (algo, variant), the variant being the overrides that set its runs apart ("" when none do).
Column = tuple[str, str]


def distance_curve(run_dir: pathlib.Path) -> list[tuple[int, float]]:
    """(iteration, fixed-scale distance) of each logged training row (the warm-up's row 0 has none)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(int(r["iteration"]), float(r["distance"])) for r in rows if "distance" in r]


def expert_reference(
    demo_path: pathlib.Path, imitated: int, length: int, clip: float | None
) -> tuple[float, int] | None:
    """(mean, count): the fixed-scale Chamfer distance of the demo file's episodes after the first ``imitated``
    to the nearest imitated one, on the imitated demos' statistics (the logged distance's scale); None if the
    file holds no other episode."""
    import jax.numpy as jnp  # imported where a reference is computed: the curves alone need no JAX

    from diffrl.algos.ild import reference_distances

    with np.load(demo_path) as data:
        states = jnp.asarray(data["state"][:, :length], jnp.float32)
    if states.shape[0] <= imitated:
        return None
    distances = np.asarray(reference_distances(states[:imitated], states[imitated:], clip))
    return float(distances.mean()), len(distances)


# A run's demo: (file, how many of its demos it imitated, episode length, the distance's clip).
DemoUse = tuple[pathlib.Path, int, int, float | None]


def run_demo(summary: dict) -> DemoUse:
    """The demo a run imitated, as its ``summary.json`` records what ran (``effective.algo``: the demo file's
    absolute path, how many of its demos, the rollout length, the clip); ILD's defaults on the task's committed
    demo where the summary predates that record. A recorded path that no longer exists (a run made in another
    checkout) is read as the committed demo of the same name."""
    algo = (summary.get("effective") or {}).get("algo") or {}
    committed = default_demo_path(summary["env"])
    demo = pathlib.Path(algo.get("demo") or committed)
    if not demo.is_file() and demo.name == committed.name:
        demo = committed
    return demo, int(algo.get("demos", 1)), int(algo.get("episode_length", 128)), algo.get("state_clip", 5.0)


def references(demos: dict[str, set[DemoUse]]) -> dict[str, str]:
    """task -> the reference cell: "–" where the demo file holds no other episode or cannot be found, or where
    the task's runs imitated different demos (one reference would not serve them all)."""
    cells = {}
    for task, uses in demos.items():
        if len(uses) > 1:
            cells[task] = "– (the runs imitated different demos)"
            continue
        path, imitated, length, clip = next(iter(uses))
        reference = expert_reference(path, imitated, length, clip) if path.is_file() else None
        cells[task] = "–" if reference is None else f"{reference[0]:.3f} ({reference[1]} episodes)"
    return cells


Curves = dict[tuple[str, Column], list[tuple[int, float]]]


def runs(sweep_dirs: list[pathlib.Path]) -> tuple[Curves, dict[str, set[DemoUse]]]:
    """(task, column) -> its distance curve, from every finished run under the sweep directories, and the demos
    each task's runs imitated. Runs whose overrides differ (a sweep over ``algo.learning_rate``, say) get their own
    column, labelled as `diffrl table` labels its rows; two runs of one column on one task are refused, not
    silently merged."""
    jobs = []
    for sweep in sweep_dirs:
        for summary_path in sorted(sweep.glob("*/summary.json")):
            summary = json.loads(summary_path.read_text())
            if summary.get("algo") in METHODS and (summary_path.parent / "metrics.jsonl").exists():
                jobs.append((summary_path.parent, summary))
    variants = job_variants([job_dir for job_dir, _ in jobs])
    curves, sources, demos = {}, {}, defaultdict(set)
    for job_dir, summary in jobs:
        env, algo = summary["env"], summary["algo"]
        demos[env].add(run_demo(summary))
        key = (env, (algo, variants[job_dir]))
        if key in sources:
            title = row_title(algo, variants[job_dir])
            raise SystemExit(f"two runs of {title} on {env}: {sources[key]} and {job_dir}; pass one of them")
        curve = distance_curve(job_dir)
        if curve:
            curves[key], sources[key] = curve, job_dir
    return curves, demos


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


def markdown(curves: Curves, reference: dict[str, str]) -> str:
    tasks = sorted({task for task, _ in curves}, key=lambda t: TASK_TITLES.get(t, t))
    columns = sorted({column for _, column in curves}, key=column_order)
    by_task = defaultdict(dict)
    for (task, column), curve in curves.items():
        by_task[task][column] = curve
    lines = [
        "Fixed-scale distance of the training rollouts to the demo (the demos' statistics, clipped to ±5, valid "
        "states only; the seeds' mean as logged): first logged iteration → lowest → last, iteration in brackets. "
        "Last column: the same distance of the expert's own other kept episodes (each from its own start) to the "
        "imitated demo.",
        "",
        "| task | " + " | ".join(row_title(*column) for column in columns) + " | expert's other episodes |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for task in tasks:
        cells = [cell(by_task[task][c]) if c in by_task[task] else "–" for c in columns]
        lines.append(f"| {TASK_TITLES.get(task, task)} | " + " | ".join([*cells, reference[task]]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="markdown file (default: <first sweep dir>/distance.md)")
    args = parser.parse_args(argv)
    curves, demos = runs(args.sweep_dirs)
    if not curves:
        parser.error(f"no ILD, ILD-L2 or BC run with a metrics.jsonl under {', '.join(map(str, args.sweep_dirs))}")
    out = args.out or args.sweep_dirs[0] / "distance.md"
    out.write_text(markdown(curves, references(demos)))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
