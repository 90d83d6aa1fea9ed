"""Results tables from sweep directories: rows = algorithms, columns = tasks, cells = mean ± std over seeds
(population std, as the papers), the paper's number beside each cell, env steps and wall clock per cell.

Jobs of one (algorithm, task) pool their seeds: a sweep over ``seed=0,1`` gives one cell over both seed
families. Jobs that differ in any other override (a hyperparameter sweep, ``algo.lr=0.01,0.1``) are rows of
their own, labelled by the overrides that differ. A job that crashed or was killed is a ``failed`` cell with
its reason; an (algo, task) pair the sweep asked for but that has no job directory is ``missing``. Nothing
is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from typing import Any

import numpy as np
import yaml

from diffrl.paper_results import (
    ALGO_TITLES,
    EXPERIMENT_TABLES,
    PAPER_SAMPLES,
    PAPERS,
    TASK_TITLES,
    TASKS,
    paper_result,
)

# diffrl's own final evaluation (deterministic), the last training return, or the final evaluation with sampled
# actions (imitation: ILD's authors evaluated so, from 128 random resets).
METRICS = ("final_return", "final_train_return", "final_sampled_return")


# Overrides that name a job's cell or leave its results unchanged; every other override that differs between
# jobs makes a row of its own (the job-name rule of conf/train.yaml's override_dirname, plus these).
IDENTITY_KEYS = ("env", "algo", "seed", "experiment", "launcher", "resume")


@dataclasses.dataclass
class Cell:
    algo: str
    task: str
    variant: str = ""  # the overrides that set this row apart from the sweep's other rows, e.g. "algo.lr=0.1"
    status: str = "missing"  # completed | failed | missing
    per_seed: dict[tuple[int, int], float] = dataclasses.field(default_factory=dict)  # (seed, index): return
    env_steps_per_seed: float | None = None
    wall_clock_s: float | None = None  # of the whole job (all its seeds)
    budget: str | None = None
    reason: str | None = None
    failures: dict[int, str] = dataclasses.field(default_factory=dict)  # seed family -> why, if none completed
    run_dirs: list[str] = dataclasses.field(default_factory=list)
    eval_episodes: set[int] = dataclasses.field(default_factory=set)  # per seed, of the completed jobs
    label: str | None = None  # shown instead of mean ± std (the demo row: the demonstration's own return)

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


def job_overrides(job_dir: pathlib.Path) -> dict[str, str]:
    """A job's command-line and sweep overrides (Hydra's ``overrides.yaml``), as key -> value."""
    file = job_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(file.read_text()) if file.is_file() else None
    pairs = (str(o).lstrip("+~").partition("=") for o in overrides or [])
    return {key: value for key, _, value in pairs if not key.startswith("hydra.")}


def ignored_keys(job_dir: pathlib.Path) -> set[str]:
    """Keys that never define a row: IDENTITY_KEYS and what the job's directory name leaves out."""
    file = job_dir / ".hydra" / "hydra.yaml"
    hydra = (yaml.safe_load(file.read_text()) or {}).get("hydra", {}) if file.is_file() else {}
    excluded = hydra.get("job", {}).get("config", {}).get("override_dirname", {}).get("exclude_keys") or []
    return (set(IDENTITY_KEYS) | set(excluded)) - {"budget"}


def job_variants(job_dirs: list[pathlib.Path]) -> dict[pathlib.Path, str]:
    """Each job's row label: its values of the overrides that differ between the jobs ("" when none do)."""
    overrides = {job_dir: job_overrides(job_dir) for job_dir in job_dirs}
    ignored = set().union(*(ignored_keys(job_dir) for job_dir in job_dirs)) if job_dirs else set()
    keys = sorted({key for values in overrides.values() for key in values} - ignored)
    differing = [k for k in keys if len({values.get(k) for values in overrides.values()}) > 1]
    return {
        job_dir: " ".join(f"{k}={values[k]}" for k in differing if k in values) for job_dir, values in overrides.items()
    }


def row_name(algo: str, variant: str) -> str:
    return f"{algo} [{variant}]" if variant else algo


def row_title(algo: str, variant: str) -> str:
    title = ALGO_TITLES.get(algo, algo)
    return f"{title} [{variant}]" if variant else title


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
        "seed": int(summary.get("seed", config.get("seed", 0))),
        "per_seed": {},
        "reason": None,
    }
    if job["status"] == "completed":
        values = (summary.get(metric) or {}).get("per_seed") or []
        seed = int(summary.get("seed", 0))
        job["per_seed"] = {(seed, i): float("nan") if v is None else float(v) for i, v in enumerate(values)}
        job["env_steps_per_seed"] = summary.get("env_steps_per_seed")
        job["wall_clock_s"] = summary.get("wall_clock_s")
        job["eval_episodes"] = summary.get("eval_episodes")
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
    """Cells keyed by (row, task), the rows as (algo, variant) in order, the tasks in order, and the paper
    table (if the sweeps name one).

    Jobs of the same row and task pool their seeds (a seed seen twice keeps its last value). A failed job is
    named in its cell unless a job of the same seed family completed (e.g. a rerun); a cell with no completed
    job is ``failed``.
    """
    rows: list[tuple[str, str]] = []
    tasks: list[str] = []
    table = None
    cells: dict[tuple[str, str], Cell] = {}
    all_jobs = [job_dir for sweep_dir in sweep_dirs for job_dir in job_dirs(sweep_dir)]
    variants = job_variants(all_jobs)
    for sweep_dir in sweep_dirs:
        plan_algos, plan_tasks, plan_table = sweep_plan(sweep_dir)
        table = table or plan_table
        rows += [(a, "") for a in plan_algos if (a, "") not in rows]
        tasks += [t for t in plan_tasks if t not in tasks]
    for job_dir in all_jobs:
        job = read_job(job_dir, metric)
        if not job["algo"] or not job["task"]:
            continue
        row = (job["algo"], variants[job_dir])
        if row not in rows:  # after its algorithm's other rows
            same_algo = [i for i, (algo, _) in enumerate(rows) if algo == job["algo"]]
            rows.insert(same_algo[-1] + 1 if same_algo else len(rows), row)
        tasks += [job["task"]] if job["task"] not in tasks else []
        key = (row_name(*row), job["task"])
        add_job(cells.setdefault(key, Cell(job["algo"], job["task"], variant=row[1])), job)
    # A plan's plain row stays if some job has no variant, or if no variant of its algorithm ran at all.
    has_variants = {algo for algo, variant in rows if variant}
    rows = [r for r in rows if r[1] or r[0] not in has_variants or any(k[0] == row_name(*r) for k in cells)]
    tasks.sort(key=lambda t: TASKS.index(t) if t in TASKS else len(TASKS))
    demos = demo_cells(cells, tasks)
    if demos:
        rows.append(("demo", ""))
        cells.update({(row_name("demo", ""), task): cell for task, cell in demos.items()})
    for algo, variant in rows:
        for task in tasks:
            cells.setdefault((row_name(algo, variant), task), Cell(algo, task, variant, reason="no job directory"))
    return cells, rows, tasks, table


def demo_cells(cells: dict[tuple[str, str], Cell], tasks: list[str]) -> dict[str, Cell]:
    """The ``demo`` row of an imitation sweep: per task, the return of the best demo its jobs imitated (read
    from the demo file their summary names)."""
    out = {}
    for task in tasks:
        for cell in cells.values():
            if cell.task != task or cell.status != "completed":
                continue
            summary_file = pathlib.Path(cell.run_dirs[0]) / "summary.json"
            summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
            path = ((summary.get("effective") or {}).get("algo") or {}).get("demo")
            if not path or not pathlib.Path(path).is_file():
                continue
            with np.load(path) as data:
                returns = np.asarray(data["return"], dtype=float)
            out[task] = Cell(
                "demo", task, status="completed", label=f"{format_number(returns[0])} (best of {len(returns)})"
            )
            out[task].per_seed = {(0, 0): float(returns[0])}
            break
    return out


def add_job(cell: Cell, job: dict[str, Any]) -> None:
    cell.run_dirs.append(job["run_dir"])
    cell.budget = cell.budget or job["budget"]
    if job["status"] != "completed":
        if job["seed"] not in {seed for seed, _ in cell.per_seed}:  # else a rerun of this family completed
            cell.failures[job["seed"]] = job["reason"]
        if cell.status != "completed":
            cell.status, cell.reason = "failed", job["reason"]
        return
    cell.failures.pop(job["seed"], None)
    cell.status = "completed"
    cell.reason = "; ".join(f"seed={seed} failed: {why}" for seed, why in cell.failures.items()) or None
    cell.per_seed.update(job["per_seed"])
    cell.env_steps_per_seed = job.get("env_steps_per_seed")
    cell.eval_episodes |= {int(job["eval_episodes"])} if job.get("eval_episodes") else set()
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
    if cell.label:
        return cell.label
    if cell.status == "completed":
        text = f"{format_number(cell.mean)} ± {format_number(cell.std)} ({len(cell.per_seed)} seeds)"
        failed = ", ".join(f"seed={seed}: {why}" for seed, why in cell.failures.items())
        return text + (f"; **{len(cell.failures)} job(s) failed**: {failed}" if cell.failures else "")
    return f"**{cell.status}**" + (f": {cell.reason}" if cell.reason else "")


def paper_text(algo: str, task: str, table: str | None) -> str:
    result = paper_result(algo, task, table)
    if result is None:
        return "–"
    mean, std = result
    return f"≈ {format_number(mean)}" if std is None else f"{format_number(mean)} ± {format_number(std)}"


def evaluation_episodes(cells) -> str:
    """ "16 deterministic episodes per seed", or the episode counts the jobs actually used."""
    counts = sorted({n for cell in cells.values() for n in cell.eval_episodes})
    return f"{'/'.join(map(str, counts)) or 'the configured'} deterministic episodes per seed"


def markdown_table(cells, rows, tasks, table: str | None, metric: str = "final_return") -> str:
    title = lambda name, titles: titles.get(name, name)
    what = {
        "final_return": f"final evaluation return ({evaluation_episodes(cells)})",
        "final_sampled_return": "final evaluation return with sampled actions (128 random resets per seed)",
    }.get(metric, "final training return")
    lines = [
        f"Mean ± std over seeds (population std) of each seed's {what}"
        + (f"; paper: {PAPERS[table]}" if table in PAPERS else "")
        + ".",
        "",
    ]
    header = ["algorithm"] + [f"{title(t, TASK_TITLES)} ({c})" for t in tasks for c in ("measured", "paper")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo, variant in rows:
        row = [row_title(algo, variant)]
        for task in tasks:
            row += [cell_text(cells[(row_name(algo, variant), task)]).replace("|", "/"), paper_text(algo, task, table)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Cost per cell: env steps per seed, wall clock of its jobs (all their seeds).", ""]
    header = ["algorithm"] + [title(t, TASK_TITLES) for t in tasks]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algo, variant in rows:
        row = [row_title(algo, variant)]
        for task in tasks:
            cell = cells[(row_name(algo, variant), task)]
            if cell.label:  # not a run (the demo row)
                row.append("–")
                continue
            row.append(
                f"{format_steps(cell.env_steps_per_seed)} steps, {format_duration(cell.wall_clock_s)}"
                if cell.status == "completed"
                else cell.status
            )
        lines.append("| " + " | ".join(row) + " |")
    if table in PAPER_SAMPLES:  # what the paper's comparison spent, beside what these cells did
        lines.append(paper_samples_row(PAPER_SAMPLES[table], tasks))
    return "\n".join(lines) + "\n"


def paper_samples_row(samples: dict[str, int], tasks) -> str:
    """The cost table's last row: the paper's env steps per seed for each task ("–" where it gives none)."""
    cells = [f"{format_steps(samples[t])} steps" if t in samples else "–" for t in tasks]
    return "| " + " | ".join(["the paper's samples per seed", *cells]) + " |"


CSV_COLUMNS = (
    "algo",
    "variant",
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


def csv_rows(cells, rows, tasks, table: str | None) -> list[dict[str, Any]]:
    lines = []
    for algo, variant in rows:
        for task in tasks:
            cell = cells[(row_name(algo, variant), task)]
            paper = paper_result(algo, task, table) or (None, None)
            lines.append(
                {
                    "algo": algo,
                    "variant": variant,
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
    return lines


def write_tables(
    sweep_dirs: list[pathlib.Path], out_dir: pathlib.Path, metric: str = "final_return", table: str | None = None
) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``results.md`` and ``results.csv`` into ``out_dir``; returns their paths."""
    cells, rows, tasks, plan_table = collect_cells(sweep_dirs, metric)
    table = table or plan_table
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out_dir / "results.md", out_dir / "results.csv"
    md_path.write_text(markdown_table(cells, rows, tasks, table, metric))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(cells, rows, tasks, table))
    return md_path, csv_path
