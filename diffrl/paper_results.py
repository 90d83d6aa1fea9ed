"""Published results ``diffrl table`` prints beside what was measured, keyed by (table, algo, task) in
diffrl's names; a value is (mean, std), or (reading, None) where the paper only has curves.

- ``table1``, ``table2``: the CE-APG paper (Gillen & Byl, arXiv 2203.02857), Tables I and II: mean ± std over
  8 seeds of each seed's final training return. Its "Pendulum" is diffrl's ``cartpole_swingup`` and its
  "Double pendulum" is ``double_pendulum_swingup``.
- ``ild_fig``: the ILD paper (Chen, Ma, Xu 2022), its README's figure, read off the curves after about an hour
  (shared/PAPERS.md): ILD's 128-step return, and the demo's (row ``demo``) where it is given.
- ``shac_fig4``: the SHAC paper (Xu et al., ICLR 2022), Fig. 4, read off the curves (about ±10 %,
  shared/PAPERS.md): SHAC's return at the end of its budget; PPO on Ant at the same 4M samples; PPO and SAC
  on Humanoid at the end of their (longer) runs; BPTT on Ant.
"""

from __future__ import annotations

PAPERS = {
    "table1": "CE-APG (Gillen & Byl 2022), Table I",
    "table2": "CE-APG (Gillen & Byl 2022), Table II",
    "shac_fig4": "SHAC (Xu et al. 2022), Fig. 4, read off the curves (±10 %)",
    "ild_fig": "ILD (Chen et al. 2022), README figure, read off the curves",
}
CEAPG_TASKS = ("cartpole_swingup", "acrobot", "double_pendulum_swingup")
SHAC_TASKS = ("shac_cartpole", "shac_ant", "shac_hopper", "shac_cheetah", "shac_humanoid")
ILD_TASKS = ("hopper", "walker2d", "ant", "reacher", "swimmer", "inverted_pendulum", "humanoid")  # and acrobot
TASKS = CEAPG_TASKS + SHAC_TASKS + ILD_TASKS  # the order of a table's columns
TASK_TITLES = {
    "cartpole_swingup": "Pendulum",
    "acrobot": "Acrobot",
    "double_pendulum_swingup": "Double pendulum",
    "shac_cartpole": "CartPole",
    "shac_ant": "Ant",
    "shac_hopper": "Hopper",
    "shac_cheetah": "Cheetah",
    "shac_humanoid": "Humanoid",
    "hopper": "Hopper",
    "walker2d": "Walker2d",
    "ant": "Ant",
    "reacher": "Reacher",
    "swimmer": "Swimmer",
    "inverted_pendulum": "Inverted pendulum",
    "humanoid": "Humanoid",
}
ALGO_TITLES = {
    "ce_apg": "CE-APG",
    "ppo": "PPO",
    "sac": "SAC",
    "brax_apg": "Brax APG",
    "papg": "PAPG",
    "cem": "CEM",
    "shac": "SHAC",
    "bptt": "BPTT",
    "ild": "ILD",
    "ild_l2": "ILD-L2",
    "bc": "BC",
    "demo": "expert demo",
}

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

# Readings of the curves (no std): (algo, task) -> return.
_SHAC_FIG4 = {
    ("shac", "shac_cartpole"): -500,
    ("shac", "shac_ant"): 7500,
    ("ppo", "shac_ant"): 800,
    ("bptt", "shac_ant"): 300,
    ("shac", "shac_humanoid"): 8000,
    ("ppo", "shac_humanoid"): 6400,
    ("sac", "shac_humanoid"): 6500,
}

# ILD's README figure, ~1 h of training: (algo, task) -> 128-step return; "demo": the demonstration's.
_ILD_FIG = {
    ("ild", "ant"): 590,
    ("demo", "ant"): 676,
    ("ild", "hopper"): 242,
    ("demo", "hopper"): 331,
    ("ild", "humanoid"): 725,
    ("demo", "humanoid"): 1138,
    ("ild", "reacher"): -23,
    ("ild", "walker2d"): 213,
    ("demo", "walker2d"): 440,
    ("ild", "swimmer"): 4.5,
    ("ild", "acrobot"): 202,
    ("demo", "acrobot"): 203,
}

PAPER_RESULTS: dict[tuple[str, str, str], tuple[float, float | None]] = {
    **{
        (table, algo, task): (float(mean), float(std))
        for table, rows in (("table1", _TABLE1), ("table2", _TABLE2))
        for algo, cells in rows.items()
        for task, (mean, std) in zip(CEAPG_TASKS, cells, strict=True)
    },
    **{("shac_fig4", algo, task): (float(value), None) for (algo, task), value in _SHAC_FIG4.items()},
    **{("ild_fig", algo, task): (float(value), None) for (algo, task), value in _ILD_FIG.items()},
}
# Env steps per seed of SHAC's paper run (epochs x envs x 32-step windows), at which Fig. 4 compares the methods
# (conf/tuned/shac_<task>_ppo.yaml gives PPO and SAC the same at budget=paper; a test keeps the two equal).
PAPER_SAMPLES: dict[str, dict[str, int]] = {
    "shac_fig4": {
        "shac_cartpole": 500 * 64 * 32,
        "shac_ant": 2000 * 64 * 32,
        "shac_hopper": 2000 * 256 * 32,
        "shac_cheetah": 2000 * 64 * 32,
        "shac_humanoid": 2000 * 64 * 32,
    }
}
EXPERIMENT_TABLES = {
    "ceapg_table1": "table1",
    "ceapg_table2": "table2",
    "shac_fig4": "shac_fig4",
    "ild_fig": "ild_fig",
}


def paper_result(algo: str, task: str, table: str | None = None) -> tuple[float, float | None] | None:
    """The paper's (mean, std) for ``algo`` on ``task``: from ``table`` if given, else from the first table
    that has it (CE-APG's row is the same in both)."""
    tables = [table] if table else ["table1", "table2"]
    for name in tables:
        if (name, algo, task) in PAPER_RESULTS:
            return PAPER_RESULTS[(name, algo, task)]
    return None
