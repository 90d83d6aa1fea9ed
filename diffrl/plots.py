"""Learning curves from sweep directories: per task, return against env steps and against wall clock,
one line per algorithm (mean across seeds) with a ±1 std band; and one overview of every task (a column
per task, env steps above, wall clock below, as the SHAC paper's Fig. 4). PNG and SVG, matplotlib.

Reads each job's ``metrics.jsonl``: diffrl's jitted runners write one row per chunk with a per-seed
``return`` list; the external trainers (diffrl/baselines) write one row per report with ``seed_index``.
"""

from __future__ import annotations

import json
import pathlib
from collections import defaultdict

import numpy as np
import yaml

from diffrl.paper_results import TASK_TITLES, TASKS
from diffrl.tables import job_variants, row_title

# Iterations too: behaviour cloning never steps the simulator to learn (its env steps stay 0).
AXES = (("env_steps", "env steps per seed"), ("wall_time_s", "wall clock (s)"), ("iteration", "iterations"))
GRID_POINTS = 200
CURVE_KEYS = ("env_steps", "wall_time_s", "iteration", "return")


def seed_curves(rows: list[dict]) -> list[dict[str, np.ndarray]]:
    """Per-seed curves ``{"env_steps", "wall_time_s", "iteration", "return"}`` from one job's metrics rows."""
    per_seed: dict[int, dict[str, list]] = defaultdict(lambda: {key: [] for key in CURVE_KEYS})
    for row in rows:
        returns = row.get("return")
        if returns is None:
            continue
        if "seed_index" in row:  # an external trainer: one seed per row
            returns = {int(row["seed_index"]): returns}
        else:
            returns = dict(enumerate(returns if isinstance(returns, list) else [returns]))
        for seed, value in returns.items():
            curve = per_seed[seed]
            curve["env_steps"].append(row["env_steps"])
            curve["wall_time_s"].append(row["wall_time_s"])
            curve["iteration"].append(row.get("iteration", np.nan))
            curve["return"].append(np.nan if value is None else value)
    return [{k: np.asarray(v, dtype=float) for k, v in per_seed[s].items()} for s in sorted(per_seed)]


def mean_band(curves: list[dict[str, np.ndarray]], x_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds interpolated onto a common x grid (up to the shortest seed's end): x, mean, std."""
    curves = [c for c in curves if len(c[x_key])]
    end = min(c[x_key][-1] for c in curves)
    start = max(c[x_key][0] for c in curves)
    x = np.linspace(start, end, GRID_POINTS) if end > start else np.asarray([end])
    ys = np.stack([np.interp(x, c[x_key], c["return"]) for c in curves])
    return x, np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)


def load_sweeps(sweep_dirs: list[pathlib.Path]) -> dict[str, dict[tuple[str, str], list[dict[str, np.ndarray]]]]:
    """task -> (algo, variant) -> per-seed curves, over every job directory that has metrics; the variant
    tells the rows of a hyperparameter sweep apart, as in ``diffrl table``."""
    curves: dict[str, dict[tuple[str, str], list]] = defaultdict(lambda: defaultdict(list))
    metrics_files = [f for d in sweep_dirs for f in sorted(d.rglob("metrics.jsonl"))]
    metrics_files = [f for f in metrics_files if (f.parent / ".hydra" / "config.yaml").is_file()]
    variants = job_variants([f.parent for f in metrics_files])
    for metrics_file in metrics_files:
        config = yaml.safe_load((metrics_file.parent / ".hydra" / "config.yaml").read_text())
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        row = (config["algo"]["name"], variants[metrics_file.parent])
        curves[config["env"]["name"]][row] += seed_curves(rows)
    return curves


def draw_task(axes, curves_by_algo: dict[tuple[str, str], list]) -> None:
    """Return vs each of ``AXES`` (env steps, wall clock, iterations) on ``axes``, one line per (algo, variant)."""
    for (algo, variant), curves in sorted(curves_by_algo.items()):
        curves = [c for c in curves if len(c["return"])]
        if not curves:
            continue
        for ax, (x_key, _) in zip(axes, AXES, strict=True):
            x, mean, std = mean_band(curves, x_key)
            (line,) = ax.plot(
                x,
                mean,
                label=f"{row_title(algo, variant)} ({len(curves)} seeds)",
                marker="o" if len(x) == 1 else None,
            )
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, (_, label) in zip(axes, AXES, strict=True):
        ax.set_xlabel(label)
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")


def save(fig, out_dir: pathlib.Path, stem: str) -> list[pathlib.Path]:
    import matplotlib.pyplot as plt

    paths = [out_dir / f"{stem}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def plot_task(task: str, curves_by_algo: dict[tuple[str, str], list], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """One figure per task, return vs env steps, wall clock and iterations (left to right); writes PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AXES), figsize=(5.5 * len(AXES), 4), constrained_layout=True)
    draw_task(axes, curves_by_algo)
    fig.suptitle(f"{TASK_TITLES.get(task, task)}: mean ± std across seeds")
    return save(fig, out_dir, f"curves_{task}")


def plot_overview(curves: dict[str, dict[tuple[str, str], list]], out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every task side by side: a column per task, a row per x axis (env steps, wall clock, iterations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(curves, key=lambda t: TASKS.index(t) if t in TASKS else len(TASKS))
    fig, axes = plt.subplots(
        len(AXES), len(tasks), figsize=(4.5 * len(tasks), 3.5 * len(AXES)), constrained_layout=True, squeeze=False
    )
    for column, task in enumerate(tasks):
        draw_task(axes[:, column], curves[task])
        axes[0, column].set_title(TASK_TITLES.get(task, task))
    fig.suptitle("return: mean ± std across seeds")
    return save(fig, out_dir, "curves_all")


def write_plots(sweep_dirs: list[pathlib.Path], out_dir: pathlib.Path) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = load_sweeps(sweep_dirs)
    paths = [path for task in sorted(curves) for path in plot_task(task, curves[task], out_dir)]
    return paths + (plot_overview(curves, out_dir) if len(curves) > 1 else [])
