"""Sweeps and records a user can trust: a job directory per sweep job, no run overwriting another's files,
impossible launches refused in one line before any work, effective settings and generated tables."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from cli.main import job_suffix
from cli.main import main as diffrl_main
from cli.train import settle_auto_resume
from diffrl.envs.tasks import ACROBOT
from diffrl.experiment import RunDirInUse, check_run_dir_is_free, configure_jax
from diffrl.loggers import JsonlSink

from conftest import REPO, compose_train, deterministic_part, import_tool, read_metrics, run_diffrl

sync_readme = import_tool("sync_readme")


def test_a_seed_sweep_of_a_table_leaves_one_complete_job_per_seed_and_one_cell_over_both(tmp_path):
    """The issue's command: two seed families of one (algo, task) cell used to share one directory, and the
    second job deleted the first one's metrics.jsonl."""
    sweep_args = ["-m", "experiment=ceapg_table2", "env=acrobot", "algo=cem", "seed=0,1", "iterations=2"]
    small = ["num_seeds=2", "eval.episodes=2", "algo.population=4", "algo.elites=2", "env.episode_length=50"]
    quiet = ["logger.wandb.enabled=false", "logger.console.progress_bar=false"]
    proc = run_diffrl("train", *sweep_args, *small, *quiet, cwd=tmp_path, timeout=240)
    sweep = tmp_path / "outputs" / "tables" / "table2_quick"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    suffix = "_algo.elites=2,algo.population=4,env.episode_length=50,eval.episodes=2,iterations=2,num_seeds=2"
    assert [p.name for p in jobs] == [f"acrobot_cem_seed0{suffix}", f"acrobot_cem_seed1{suffix}"]
    printed = re.findall(r"summary: (\S+)/summary\.json", proc.stdout + proc.stderr)
    assert sorted(printed) == [str(job) for job in jobs]  # what a user copies from the sweep's output
    metrics = {}
    for seed, job in enumerate(jobs):
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert [row["iteration"] for row in rows] == [1, 2]  # complete: every iteration of this job
        summary = json.loads((job / "summary.json").read_text())
        assert summary["seed"] == seed and summary["status"] == "completed"
        metrics[job] = (job / "metrics.jsonl").read_text()
    # two seed families, two different runs: their returns differ (not only the wall-clock columns)
    returns = [[row["return"] for row in read_metrics(job)] for job in jobs]
    assert returns[0] != returns[1], returns

    table = run_diffrl("table", str(sweep), cwd=tmp_path).stdout
    assert "| CEM | " in table and "(4 seeds)" in table  # one cell: 2 vmapped seeds x 2 families
    assert "(2 deterministic episodes per seed)" in table

    # The same sweep again: refused in one line before any work; the first sweep's files are untouched.
    again = run_diffrl("train", *sweep_args, *small, *quiet, cwd=tmp_path, check=False, timeout=120)
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert "already holds a run" in line and "resume=" in line
    assert all((job / "metrics.jsonl").read_text() == metrics[job] for job in jobs)

    # resume=auto (what a requeued Slurm job gets): seed 1 as if killed after its first chunk continues from
    # its checkpoint to the same end; seed 0, complete, is left as it is.
    interrupted = jobs[1]
    before = [deterministic_part(r) for r in read_metrics(interrupted)]
    final = json.loads((interrupted / "summary.json").read_text())["final_return"]
    shutil.rmtree(interrupted / "checkpoints" / "2")
    (interrupted / "summary.json").unlink()
    run_diffrl("train", *sweep_args, *small, *quiet, "resume=auto", cwd=tmp_path, timeout=240)
    assert [deterministic_part(r) for r in read_metrics(interrupted)] == before
    assert json.loads((interrupted / "summary.json").read_text())["final_return"] == final
    assert "resumed from iteration 1" in (interrupted / "train.log").read_text()
    assert (jobs[0] / "metrics.jsonl").read_text() == metrics[jobs[0]]
    assert "already completed; nothing to do" in (jobs[0] / "train.log").read_text()


def test_a_sweep_jobs_directory_goes_back_to_every_command_as_printed(tmp_path):
    """A job's directory name holds its other overrides (``=`` and ``,``, Hydra's syntax): `diffrl eval`
    (``run_dir=<dir>`` or the directory alone), `diffrl train resume=<dir>`, `diffrl table` and `diffrl plot`
    all take it as printed. It used to die in Hydra's override parser (``mismatched input '='``)."""
    sweep_args = ["-m", "experiment=ceapg_table2", "env=acrobot", "algo=cem", "seed=0", "iterations=2"]
    small = ["num_seeds=2", "eval.episodes=2", "algo.population=4", "algo.elites=2", "env.episode_length=50"]
    proc = run_diffrl("train", *sweep_args, *small, "logger.console.progress_bar=false", cwd=tmp_path, timeout=240)
    (job,) = re.findall(r"summary: (\S+)/summary\.json", proc.stdout + proc.stderr)
    assert "=" in job and "," in job
    before = [deterministic_part(r) for r in read_metrics(pathlib.Path(job))]
    final = json.loads((pathlib.Path(job) / "summary.json").read_text())["final_return"]

    run_diffrl("eval", f"run_dir={job}", "episodes=1", cwd=tmp_path)
    assert np.asarray(json.loads((pathlib.Path(job) / "eval.json").read_text())["return_per_episode"]).shape == (2, 1)
    run_diffrl("eval", job, "episodes=3", cwd=tmp_path)
    assert np.asarray(json.loads((pathlib.Path(job) / "eval.json").read_text())["return_per_episode"]).shape == (2, 3)

    shutil.rmtree(pathlib.Path(job) / "checkpoints" / "2")  # as if killed after its first chunk
    (pathlib.Path(job) / "summary.json").unlink()
    run_diffrl("train", f"resume={job}", cwd=tmp_path, timeout=240)
    assert [deterministic_part(r) for r in read_metrics(pathlib.Path(job))] == before
    assert json.loads((pathlib.Path(job) / "summary.json").read_text())["final_return"] == final

    table = run_diffrl("table", job, cwd=tmp_path).stdout
    assert "| CEM | " in table and "(2 seeds)" in table
    run_diffrl("plot", job, cwd=tmp_path)
    assert (pathlib.Path(job) / "curves_acrobot.png").stat().st_size > 5000


def test_auto_resume_restarts_a_job_that_died_before_its_first_checkpoint(tmp_path):
    """Its own leftovers (a metrics row, a failed summary, an empty checkpoint folder) are cleared, so the
    fresh start is not refused as another run's directory."""
    cfg = compose_train("resume=auto")
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1}\n')
    (tmp_path / "summary.json").write_text('{"status": "failed", "error": "Slurm job 3_1 ended NODE_FAIL"}')
    (tmp_path / "checkpoints" / "tmp-save").mkdir(parents=True)
    assert settle_auto_resume(cfg, tmp_path) is None and cfg.resume is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    check_run_dir_is_free(cfg, tmp_path)

    (tmp_path / "checkpoints" / "4").mkdir(parents=True)  # an orbax step: continue from it
    cfg = compose_train("resume=auto")
    assert settle_auto_resume(cfg, tmp_path) is None and cfg.resume == str(tmp_path)

    (tmp_path / "summary.json").write_text('{"status": "completed", "final_return": {"mean": 3.0}}')
    cfg = compose_train("resume=auto")
    assert settle_auto_resume(cfg, tmp_path)["final_return"]["mean"] == 3.0


def test_job_suffix_names_the_other_overrides_and_never_nests_directories():
    assert job_suffix("") == ""
    assert job_suffix("algo.lr=0.1,iterations=2") == "_algo.lr=0.1,iterations=2"
    assert "/" not in job_suffix("hardware.compilation_cache_dir=/tmp/x")


def test_the_metrics_file_of_another_run_is_never_deleted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n')
    with pytest.raises(FileExistsError, match="not resuming"):
        JsonlSink(path)
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    sink = JsonlSink(path, resume_step=1)  # a resumed run keeps its own lines up to the restored step
    sink.log({"iteration": 2, "return": 5.0}, 2)
    sink.close()
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_taken_run_directory_is_refused_unless_resumed(tmp_path):
    cfg = compose_train("debug=smoke")
    check_run_dir_is_free(cfg, tmp_path)  # empty: free
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(RunDirInUse, match="summary.json"):
        check_run_dir_is_free(cfg, tmp_path)
    check_run_dir_is_free(compose_train("debug=smoke", f"resume={tmp_path}"), tmp_path)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["-m", "hardware=cpu,gpu"],
            "-m hardware=cpu,gpu with launcher=local: the jobs share processes, and JAX's platform cannot change",
        ),
        (["-m", "hardware=gpu,cpu", "launcher=joblib"], "with launcher=joblib: the jobs share processes"),
        (
            ["-m", "hardware=gpu", "launcher=slurm"],
            "hardware=gpu with launcher=slurm asks for no GPU per job (hydra.launcher.gpus_per_node=0): "
            "add hydra.launcher.gpus_per_node=1",
        ),
        (
            ["-m", "hardware=gpu", "launcher=submitit_local", "hydra.launcher.gpus_per_node=0"],
            "asks for no GPU per job",
        ),
    ],
)
def test_impossible_launches_are_refused_in_one_line_before_hydra_starts(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        diffrl_main(["train", *args, f"hydra.sweep.dir={tmp_path}/sweep"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert not (tmp_path / "sweep").exists()  # nothing launched


def test_possible_launches_pass_the_check(tmp_path):
    from cli.main import check_launch

    check_launch(["-m", "hardware=cpu,gpu", "launcher=submitit_local", "hydra.launcher.gpus_per_node=1"])
    check_launch(["-m", "hardware=gpu", "launcher=slurm", "hydra.launcher.gpus_per_node=4"])
    check_launch(["hardware=gpu", "launcher=slurm"])  # no sweep: the launcher is not used


def test_sb3_on_a_gpu_is_refused_by_the_cli_in_one_line(tmp_path):
    proc = run_diffrl("train", "algo=sb3_ppo", "hardware=gpu", cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "algo=sb3_ppo trains with PyTorch's CPU build" in line and "hardware=cpu" in line
    assert not list((tmp_path / "outputs").rglob("metrics.jsonl"))


def test_xla_flags_are_added_once_however_many_jobs_configure_jax(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=true")
    hardware = compose_train("hardware.xla_flags='--xla_cpu_enable_fast_math=false'").hardware
    for _ in range(3):  # three jobs of a sweep in one process
        configure_jax(hardware)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=true --xla_cpu_enable_fast_math=false"


def test_importing_diffrl_prints_no_warp_warning():
    code = "import diffrl, brax.envs, mujoco.mjx"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warp" not in (proc.stdout + proc.stderr).lower()


def test_the_acrobot_has_the_papers_capsules():
    """Capsules 1.0 m end to end (caps included), pivots 0.9 m apart, 2.5 kg each (the paper's acrobot)."""
    model = mujoco.MjModel.from_xml_path(str(ACROBOT.xml_path))
    radius, half_length = model.geom_size[:, 0], model.geom_size[:, 1]
    assert np.allclose(2 * (half_length + radius), 1.0)
    assert np.allclose(model.body_mass[1:], 2.5) and np.isclose(model.body_pos[2, 2], 0.9)


def test_the_readme_shows_the_committed_result_files():
    """Every measured table in the README is a generated block equal to its committed file (`make readme`)."""
    readme = (REPO / "README.md").read_text()
    blocks = sync_readme.BLOCK.findall(readme)
    sources = {source for _, source, *_ in blocks}
    assert {"docs/results/table1_quick/results.md", "docs/results/table2_quick/results.md"} <= sources
    assert sync_readme.synced(readme) == readme, "README out of sync with docs/results: run `make readme`"
    cluster = (REPO / "docs" / "cluster.md").read_text()
    assert "docs/results/devices.md" in {source for _, source, *_ in sync_readme.BLOCK.findall(cluster)}
    assert sync_readme.synced(cluster) == cluster, "docs/cluster.md out of sync: run `make readme`"
    ild = (REPO / "docs" / "ild.md").read_text()
    assert "docs/results/ild_demos.md" in {source for _, source, *_ in sync_readme.BLOCK.findall(ild)}
    assert sync_readme.synced(ild) == ild, "docs/ild.md out of sync: run `make readme`"


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_the_ceapg_tables_lead_with_the_papers_metric(table):
    """CE-APG's tables report what the paper reports, each seed's final training return, and diffrl's final
    evaluation beside it: `make table1|table2` writes both, the committed results and the README show both."""
    makefile = (REPO / "Makefile").read_text()
    sweep = f"$(TABLES)/{table}_$(BUDGET)"
    assert f"diffrl table {sweep} --metric final_train_return\n" in makefile
    assert f"diffrl table {sweep} --out {sweep}/evaluation\n" in makefile
    results = REPO / "docs" / "results" / f"{table}_quick"
    assert "each seed's final training return;" in (results / "results.md").read_text().splitlines()[0]
    assert "final evaluation return" in (results / "evaluation" / "results.md").read_text().splitlines()[0]
    sources = {source for _, source, *_ in sync_readme.BLOCK.findall((REPO / "README.md").read_text())}
    assert {f"docs/results/{table}_quick/results.md", f"docs/results/{table}_quick/evaluation/results.md"} <= sources


def test_sync_readme_refills_a_block_from_its_file(tmp_path):
    (tmp_path / "table.md").write_text("| new |\n")
    readme = tmp_path / "README.md"
    block = "intro\n<!-- generated from table.md by `make readme` -->\n{}\n<!-- end generated -->\n"
    readme.write_text(block.format("| old |"))
    assert sync_readme.main([str(readme), "--check"]) == 1
    assert sync_readme.main([str(readme)]) == 0
    assert readme.read_text() == block.format("| new |")
    assert sync_readme.main([str(readme), "--check"]) == 0
