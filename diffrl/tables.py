"""Results tables from sweep directories: rows = algorithms, columns = tasks, cells = mean ± std over seeds
(population std, as the papers), the paper's number beside each cell, env steps and wall clock per cell.

A job that crashed or was killed is a ``failed`` cell with its reason; an (algo, task) pair the sweep asked
for but that has no job directory is ``missing``. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from typing import Any

import numpy as np
import yaml

from diffrl.paper_results import ALGO_TITLES, EXPERIMENT_TABLES, PAPERS, TASK_TITLES, TASKS, paper_result

METRICS = ("final_return", "final_train_return")  # diffrl's own final evaluation, or the last training return


@dataclasses.dataclass
class Cell:
    algo: str
    task: str
    status: str = "missing"  # completed | failed | missing
    per_seed: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)  # (seed, index): return
    env_steps_per_seed: float | None = None
    wall_clock_s: float | None = None  # of the whole job (all its seeds)
    budget: str | None = None
    reason: str | None = None
    run_dirs: list[str] = dataclasses.field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return float(np.mean(list(self.per_seed.values()))) if self.per_seed else None

    @property
    def std(self) -> float | None:
        return float(np.std(list(self.per_seed.values()))) if self.per_seed else None  # population std


def job_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every job directory under a sweep: it has Hydra's saved config or a summary."""
    found = {p.parents[1] for p in sweep_dir.rglob(".hydra/config.yaml")}
    found |= {p.parent for p in sweep_dir.rglob("summary.json")}
    return sorted(found)


def last_error_line(log_file: pathlib.Path) -> str | None:
    if not log_file.is_file():
        return None
    errors = [line for line in log_file.read_text(errors="replace").splitlines() if "[ERROR]" in line]
    return errors[-1].split("] - ", 1)[-1].strip() if errors else None


def read_job(job_dir: pathlib.Path, metric: str = "final_return") -> dict[str, Any]:
    """One job's outcome: env, algo, status, per-seed returns (keyed by seed id), cost, failure reason."""
    summary_file, config_file = job_dir / "summary.json", job_dir / ".hydra" / "config.yaml"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    job = {
        "algo": summary.get("algo") or config.get("algo", {}).get("name"),
        "task": summary.get("env") or config.get("env", {}).get("name"),
        "budget": summary.get("budget") or config.get("budget"),
        "run_dir": str(job_dir),
        "status": summary.get("status", "failed"),
        "per_seed": {},
        "reason": None,
    }
    if job["status"] == "completed":
        values = (summary.get(metric) or {}).get("per_seed") or []
        seed = int(summary.get("seed", 0))
        job["per_seed"] = {(seed, i): float("nan") if v is None else float(v) for i, v in enumerate(values)}
        job["env_steps_per_seed"] = summary.get("env_steps_per_seed")
        job["wall_clock_s"] = summary.get("wall_clock_s")
        if not values:
            job.update(status="failed", reason=f"summary.json has no {metric}")
    else:
        job["status"] = "failed"
        job["reason"] = (
            summary.get("error")
            or last_error_line(job_dir / "train.log")
            or ("no summary.json (killed, timed out or still running)")
        )
    return job


def sweep_plan(sweep_dir: pathlib.Path) -> tuple[list[str], list[str], str | None]:
    """The algorithms and tasks a sweep asked for (its ``multirun.yaml``: the sweeper's params, then the
    command line's overrides) and the paper table its experiment reproduces."""
    file = sweep_dir / "multirun.yaml"
    if not file.is_file():
        return [], [], None
    cfg = yaml.safe_load(file.read_text())
    hydra = cfg.get("hydra", {})
    wanted = {k: str(v) for k, v in (hydra.get("sweeper", {}).get("params") or {}).items()}
    for override in hydra.get("overrides", {}).get("task") or []:
        key, _, value = override.partition("=")
        wanted[key] = value
    simple = lambda key: [v for v in wanted.get(key, "").split(",") if v and "(" not in v]  # skips glob()
    names = {key: simple(key) for key in ("algo", "env")}
    algos = names["algo"] or [cfg.get("algo", {}).get("name")]
    tasks = names["env"] or [cfg.get("env", {}).get("name")]
    experiment = hydra.get("runtime", {}).get("choices", {}).get("experiment")
    return [a for a in algos if a], [t for t in tasks if t], EXPERIMENT_TABLES.get(experiment)


def collect_cells(sweep_dirs: list[pathlib.Path], metric: str = "final_return"):
    """Cells keyed by (algo, task), the row and column order, and the paper table (if the sweeps name one).

    Jobs of the same (algo, task) pool their seeds (a seed seen twice keeps its last value); a completed job
    wins over a failed one, whose reason is kept only when nothing completed.
    """
    algos: list[str] = []
    tasks: list[str] = []
    table = None
    cells: dict[tuple[str, str], Cell] = {}
    for sweep_dir in sweep_dirs:
        plan_algos, plan_tasks, plan_table = sweep_plan(sweep_dir)
        table = table or plan_table
        algos += [a for a in plan_algos if a not in algos]
        tasks += [t for t in plan_tasks if t not in tasks]
        for job_dir in job_dirs(sweep_dir):
            job = read_job(job_dir, metric)
            if not job["algo"] or not job["task"]:
                continue
            algos += [job["algo"]] if job["algo"] not in algos else []
            tasks += [job["task"]] if job["task"] not in tasks else []
            add_job(cells.setdefault((job["algo"], job["task"]), Cell(job["algo"], job["task"])), job)
    tasks.sort(key=lambda t: TASKS.index(t) if t in TASKS else len(TASKS))
    for algo in algos:
        for task in tasks:
            cells.setdefault((algo, task), Cell(algo, task, reason="no job directory"))
    return cells, algos, tasks, table


def add_job(cell: Cell, job: dict[str, Any]) -> None:
    cell.run_dirs.append(job["run_dir"])
    cell.budget = cell.budget or job["budget"]
    if job["status"] != "completed":
        if cell.status != "completed":
            cell.status, cell.reason = "failed", job["reason"]
        return
    cell.status, cell.reason = "completed", None
    cell.per_seed.update(job["per_seed"])
    cell.env_steps_per_seed = job.get("env_steps_per_seed")
    cell.wall_clock_s = (cell.wall_clock_s or 0.0) + float(job.get("wall_clock_s") or 0.0)


def format_number(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "nan" if x is not None else "–"
    if abs(x) >= 1e5:
        return f"{x:.2g}".replace("e+0", "e").replace("e+", "e")
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_steps(steps: float | None) -> str:
    if steps is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if steps >= scale:
            return f"{steps / scale:.3g}{unit}"
    return f"{steps:.0f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cell_text(cell: Cell) -> str:
    if cell.status == "completed":
        return f"{format_number(cell.mean)} ± {format_number(cell.std)} ({len(cell.per_seed)} seeds)"
    return f"**{cell.status}**" + (f": {cell.reason}" if cell.reason else "")


def paper_text(algo: str, task: str, table: str | None) -> str:
    result = paper_result(algo, task, table)
    if result is None:
        return "–"
    mean, std = result
    return f"≈ {format_number(mean)}" if std is None else f"{format_number(mean)} ± {format_number(std)}"


def markdown_table(cells, algos, tasks, table: str | None, metric: str = "final_return") -> str:
    title = lambda name, titles: titles.get(name, name)
    what = (
        "final evaluation return (16 deterministic episodes per seed)"
        if metric == "final_return"
        else ("final training return")
    )
    lines = [
        f"Mean ± std over seeds (population std) of each seed's {what}"
        + (f"; paper: {PAPERS[table]}" if table in PAPERS else "")
        + ".",
        "",
    ]
    header = ["algorithm"] + [f"{title(t, TASK_TITLES)} ({c})" for t in tasks for c in ("measured", "paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo in algos:
        row = [title(algo, ALGO_TITLES)]
        for task in tasks:
            row += [cell_text(cells[(algo, task)]).replace("|", "/"), paper_text(algo, task, table)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Cost per cell: env steps per seed, wall clock of the job (all its seeds).", ""]
    header = ["algorithm"] + [title(t, TASK_TITLES) for t in tasks]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo in algos:
        row = [title(algo, ALGO_TITLES)]
        for task in tasks:
            cell = cells[(algo, task)]
            row.append(
                f"{format_steps(cell.env_steps_per_seed)} steps, {format_duration(cell.wall_clock_s)}"
                if cell.status == "completed"
                else cell.status
            )
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "algo",
    "task",
    "status",
    "mean",
    "std",
    "num_seeds",
    "per_seed",
    "paper_mean",
    "paper_std",
    "env_steps_per_seed",
    "wall_clock_s",
    "budget",
    "reason",
    "run_dirs",
)


def csv_rows(cells, algos, tasks, table: str | None) -> list[dict[str, Any]]:
    rows = []
    for algo in algos:
        for task in tasks:
            cell = cells[(algo, task)]
            paper = paper_result(algo, task, table) or (None, None)
            rows.append(
                {
                    "algo": algo,
                    "task": task,
                    "status": cell.status,
                    "mean": cell.mean,
                    "std": cell.std,
                    "num_seeds": len(cell.per_seed),
                    "per_seed": " ".join(f"{v:.6g}" for v in cell.per_seed.values()),
                    "paper_mean": paper[0],
                    "paper_std": paper[1],
                    "env_steps_per_seed": cell.env_steps_per_seed,
                    "wall_clock_s": cell.wall_clock_s,
                    "budget": cell.budget,
                    "reason": cell.reason,
                    "run_dirs": " ".join(cell.run_dirs),
                }
            )
    return rows


def write_tables(
    sweep_dirs: list[pathlib.Path], out_dir: pathlib.Path, metric: str = "final_return", table: str | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``results.md`` and ``results.csv`` into ``out_dir``; returns their paths."""
    cells, algos, tasks, plan_table = collect_cells(sweep_dirs, metric)
    table = table or plan_table
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / "results.md", out_dir / "results.csv"
    md_path.write_text(markdown_table(cells, algos, tasks, table, metric))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(cells, algos, tasks, table))
    return md_path, csv_path
