"""The `diffrl` command: subcommands, usage, one-line errors for bad choices."""

import subprocess
import sys

import pytest

from cli.main import group_choices

from conftest import REPO


def diffrl(*args):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_help_lists_subcommands():
    proc = diffrl("--help")
    assert proc.returncode == 0
    for command in ("train", "eval", "table", "plot"):
        assert f"  {command} " in proc.stdout


def test_unknown_subcommand_prints_usage_and_fails():
    proc = diffrl("fly")
    assert proc.returncode == 2
    assert "unknown command 'fly'" in proc.stderr and "usage:" in proc.stderr


@pytest.mark.parametrize(
    "override,expected",
    [
        ("algo=nope", f"unknown algo 'nope'; valid choices: {', '.join(group_choices('algo'))}"),
        ("env=nope", f"unknown env 'nope'; valid choices: {', '.join(group_choices('env'))}"),
        ("env=acrobot,nope", "unknown env 'nope'"),
        ("hardware=tpu", "unknown hardware 'tpu'; valid choices: cpu, gpu"),
        ("launcher=nope", "unknown launcher 'nope'; valid choices: joblib, local, slurm, submitit_local"),
    ],
)
def test_bad_choice_is_one_readable_line(override, expected):
    proc = diffrl("train", override)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0]


def test_misspelled_key_fails():
    proc = diffrl("train", "algo.populaton=3")
    assert proc.returncode != 0
    assert "populaton" in proc.stderr


def test_cfg_job_prints_the_composed_config():
    proc = diffrl("train", "env=cartpole_swingup", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: cartpole_swingup" in proc.stdout and "num_seeds: 8" in proc.stdout


def test_resume_of_a_directory_that_is_not_a_run_fails_clearly(tmp_path):
    proc = diffrl("train", f"resume={tmp_path}")
    assert proc.returncode == 2
    assert "not a diffrl run directory" in proc.stderr
