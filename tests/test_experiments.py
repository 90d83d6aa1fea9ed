"""Named experiments (conf/experiment/*) and launchers: every file composes, the sweeps expand to the
expected jobs, and the table pipeline runs end to end on a micro budget through submitit's local executor."""

import csv
import json
import types

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from diffrl.paper_results import SHAC_TASKS

from conftest import CONF_DIR, compose_train, compose_with_hydra, run_diffrl

ILD_FIG_TASKS = ["hopper", "walker2d", "ant", "reacher", "swimmer", "inverted_pendulum", "acrobot"]

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
ALGOS = ("cem", "papg")  # the cheapest pair for the micro end-to-end sweep
TASKS = ["cartpole_swingup", "acrobot", "double_pendulum_swingup"]
LAUNCHERS = {
    "local": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "slurm": "hydra_plugins.diffrl_launcher.submitit_launchers.SlurmLauncher",  # hydra-submitit's, resuming
    "submitit_local": "hydra_plugins.diffrl_launcher.submitit_launchers.LocalLauncher",
}


def sweep_jobs(*overrides):
    """The jobs `diffrl train -m <overrides>` launches: the experiment's sweep, then the command line."""
    cfg = compose_with_hydra(*overrides)
    params = {**cfg.hydra.sweeper.params, **dict(o.split("=", 1) for o in overrides)}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [dict(o.split("=", 1) for o in job) for job in batch]


@pytest.mark.parametrize("budget", ["quick", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, budget):
    cfg = compose_train(f"experiment={experiment}", f"budget={budget}")
    seeds = {"quick": 2, "paper": 5} if experiment in ("shac_fig4", "ild_fig") else {"quick": 8, "paper": 8}
    assert cfg.num_seeds == seeds[budget] and cfg.budget == budget
    assert cfg.logger.wandb.group == f"{experiment}_{budget}"  # one wandb group per sweep


@pytest.mark.parametrize(
    "experiment,algos,tasks",
    [
        ("ceapg_table1", ["ce_apg", "ppo", "sac", "brax_apg"], TASKS),
        ("ceapg_table2", ["ce_apg", "papg", "cem"], TASKS),
        ("shac_fig4", ["shac", "bptt", "ppo", "sac"], list(SHAC_TASKS)),
        ("ild_fig", ["ild", "ild_l2", "bc"], ILD_FIG_TASKS),
    ],
)
def test_table_sweeps_expand_to_one_job_per_algo_and_task(experiment, algos, tasks):
    jobs = sweep_jobs(f"experiment={experiment}", "budget=quick")
    assert sorted((j["algo"], j["env"]) for j in jobs) == sorted((a, t) for a in algos for t in tasks)
    cfg = compose_with_hydra(f"experiment={experiment}", "budget=paper")
    assert cfg.hydra.sweep.dir.endswith(f"tables/{experiment.removeprefix('ceapg_')}_paper")


@pytest.mark.parametrize("launcher,target", LAUNCHERS.items())
def test_launchers_are_config_choices(launcher, target):
    cfg = compose_with_hydra("experiment=ceapg_table2", f"launcher={launcher}")
    assert cfg.hydra.launcher._target_ == target
    assert compose_with_hydra().hydra.launcher._target_ == LAUNCHERS["local"]  # the default


def test_micro_table_pipeline_through_submitit_local(tmp_path):
    """2 algorithms x 1 task x 2 seeds: sweep with submitit's local executor, then the table."""
    run_diffrl(
        "train",
        "-m",
        "experiment=ceapg_table2",
        f"algo={','.join(ALGOS)}",
        "env=acrobot",
        "debug=smoke",
        "logger.console.progress_bar=false",
        "launcher=submitit_local",
        cwd=tmp_path,
        timeout=240,
    )
    sweep = tmp_path / "outputs" / "tables" / "table2_quick"
    summaries = {a: json.loads((sweep / f"acrobot_{a}_seed0_debug=smoke" / "summary.json").read_text()) for a in ALGOS}
    proc = run_diffrl("table", str(sweep), cwd=tmp_path)
    rows = {r["algo"]: r for r in csv.DictReader((sweep / "results.csv").open())}
    assert sorted(rows) == ["cem", "papg"]
    for algo, summary in summaries.items():
        assert summary["status"] == "completed" and summary["num_seeds"] == 2
        row = rows[algo]
        assert row["status"] == "completed" and row["num_seeds"] == "2"
        assert float(row["mean"]) == pytest.approx(summary["final_return"]["mean"], rel=1e-6)
        assert float(row["std"]) == pytest.approx(summary["final_return"]["std"], rel=1e-5, abs=1e-6)
        assert float(row["env_steps_per_seed"]) == summary["env_steps_per_seed"]
    assert "Acrobot (paper)" in proc.stdout and "626 ± 160" in proc.stdout and "2456 ± 647" in proc.stdout
    run_diffrl("plot", str(sweep), cwd=tmp_path)
    assert (sweep / "curves_acrobot.png").stat().st_size > 5000 and (sweep / "curves_acrobot.svg").is_file()


def test_a_crashing_job_leaves_the_rest_of_the_sweep_running(tmp_path):
    """The basic launcher: the first job fails (unknown budget), the second still runs; the table says why."""
    run_diffrl(
        "train",
        "-m",
        "experiment=ceapg_table2",
        "algo=cem",
        "env=acrobot",
        "debug=smoke",
        "budget=nope,quick",
        "logger.console.progress_bar=false",
        cwd=tmp_path,
        timeout=180,
    )
    tables = tmp_path / "outputs" / "tables"
    job = "acrobot_cem_seed0_debug=smoke"
    failed = json.loads((tables / "table2_nope" / job / "summary.json").read_text())
    assert failed["status"] == "failed" and "unknown budget 'nope'" in failed["error"]
    completed = json.loads((tables / "table2_quick" / job / "summary.json").read_text())
    assert completed["status"] == "completed"
    proc = run_diffrl("table", str(tables / "table2_nope"), cwd=tmp_path)
    assert "**failed**: ConfigError: unknown budget 'nope'" in proc.stdout


def test_a_job_that_left_no_result_is_named_by_what_ended_it():
    """The Slurm launcher's record of a dead job (tests/test_slurm.py runs it against a real cluster)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from hydra_plugins.diffrl_launcher.submitit_launchers import SlurmLauncher

    job = types.SimpleNamespace(job_id="9_1", state="CANCELLED by 0")
    cancelled = UncompletedJobError("Job 9_1 (task: 0) has not produced any output (state: CANCELLED by 0)")
    assert SlurmLauncher().failure_reason(job, cancelled) == "Slurm job 9_1 ended CANCELLED by 0 without a result"
    raised = FailedJobError(
        "Job (task=0) failed during processing with trace:\n---\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nValueError: boom\n'
    )
    assert SlurmLauncher().failure_reason(job, raised) == "Slurm job 9_1 raised ValueError: boom"
