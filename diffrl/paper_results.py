"""The CE-APG paper's published results (Gillen & Byl, arXiv 2203.02857, Tables I and II): mean ± std over
8 seeds of each seed's final training return, keyed by (table, algo, task) in diffrl's names.

``diffrl table`` prints these beside what was measured. The paper's "Pendulum" is diffrl's
``cartpole_swingup`` and its "Double pendulum" is ``double_pendulum_swingup``.
"""

from __future__ import annotations

PAPER = "CE-APG (Gillen & Byl 2022)"
TASKS = ("cartpole_swingup", "acrobot", "double_pendulum_swingup")
TASK_TITLES = {"cartpole_swingup": "Pendulum", "acrobot": "Acrobot", "double_pendulum_swingup": "Double pendulum"}
ALGO_TITLES = {"ce_apg": "CE-APG", "ppo": "PPO", "sac": "SAC", "brax_apg": "Brax APG", "papg": "PAPG", "cem": "CEM"}

# (mean, std) per task, in TASKS order.
_TABLE1 = {
    "ce_apg": ((-355, 10), (3053, 458), (4295, 75)),
    "ppo": ((-464, 223), (405, 927), (4249, 549)),
    "sac": ((-2274, 1000), (359, 159), (-3.9e5, 4.9e6)),
    "brax_apg": ((-3485, 819), (1949, 814), (-1982, 4056)),
}
_TABLE2 = {
    "ce_apg": ((-355, 10), (3053, 458), (4295, 75)),
    "papg": ((-1034, 208), (2456, 647), (2335, 431)),
    "cem": ((-3019, 559), (626, 160), (-2.7e5, 7.6e5)),
}

PAPER_RESULTS: dict[tuple[str, str, str], tuple[float, float]] = {
    (table, algo, task): (float(mean), float(std))
    for table, rows in (("table1", _TABLE1), ("table2", _TABLE2))
    for algo, cells in rows.items()
    for task, (mean, std) in zip(TASKS, cells, strict=True)
}
EXPERIMENT_TABLES = {"ceapg_table1": "table1", "ceapg_table2": "table2"}


def paper_result(algo: str, task: str, table: str | None = None) -> tuple[float, float] | None:
    """The paper's (mean, std) for ``algo`` on ``task``: from ``table`` if given, else from the first table
    that has it (CE-APG's row is the same in both)."""
    tables = [table] if table else ["table1", "table2"]
    for name in tables:
        if (name, algo, task) in PAPER_RESULTS:
            return PAPER_RESULTS[(name, algo, task)]
    return None
