"""One job across several devices (``hardware.devices``): the seed axis sharded over a mesh of CPU host
devices gives the run a one-device run gives, bit for bit; one seed's population sharded gives it up to
round-off; impossible device counts are refused before compiling."""

import json
import os

import numpy as np
import pytest

from diffrl.devices import DeviceError, requested_devices
from diffrl.experiment import ConfigError, check_config

from conftest import compose_train, deterministic_part, run_diffrl

SMOKE = ("debug=smoke", "algo=cem", "logger.console.progress_bar=false")


def _runs(root):
    """{(devices, num_seeds): (metrics rows, summary)} of a sweep's jobs."""
    runs = {}
    for job in (root / "outputs").glob("multirun/*/*/*/"):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed", summary.get("error")
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        runs[(summary["effective"]["devices"], summary["num_seeds"])] = (rows, summary)
    return runs


def test_seeds_sharded_over_two_devices_train_exactly_as_on_one(tmp_path, monkeypatch):
    """Both jobs of the sweep run under the XLA flags a sharded CPU run sets for itself (2 host devices, one
    thread each), so the 1-device run is the reference a user would compare against. CEM's arithmetic does
    not depend on how many seeds a device batches; CE-APG's does, by round-off (docs/cluster.md)."""
    flags = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} {flags}")
    run_diffrl("train", "-m", *SMOKE, "hardware.devices=1,2", "num_seeds=1,4", cwd=tmp_path)
    runs = _runs(tmp_path)
    assert set(runs) == {(1, 1), (2, 1), (1, 4), (2, 4)}
    log = (next((tmp_path / "outputs").glob("multirun/*/*/*devices=2,num_seeds=4*")) / "train.log").read_text()
    assert "4 seeds sharded over 2 devices" in log
    log = (next((tmp_path / "outputs").glob("multirun/*/*/*devices=2,num_seeds=1*")) / "train.log").read_text()
    assert "1 seeds, each seed's population (24) sharded over 2 devices" in log

    # One seed on two devices: its population is split, each device scores its half, the elites are chosen
    # from all: the same run as on one device, up to round-off (a device batches 12 candidates, not 24).
    (halves_rows, halves), (whole_rows, whole) = runs[(2, 1)], runs[(1, 1)]
    assert [sorted(r) for r in halves_rows] == [sorted(r) for r in whole_rows]
    for halves_row, whole_row in zip(halves_rows, whole_rows):
        for key, value in deterministic_part(whole_row).items():
            np.testing.assert_allclose(halves_row[key], value, rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(halves["final_return"]["per_seed"], whole["final_return"]["per_seed"], rtol=1e-4)

    # Two seeds a device: the same metrics and final returns as on one device, bit for bit.
    (sharded_rows, sharded), (one_rows, one) = runs[(2, 4)], runs[(1, 4)]
    assert [r["iteration"] for r in sharded_rows] == [2, 4]
    assert [deterministic_part(r) for r in sharded_rows] == [deterministic_part(r) for r in one_rows]
    assert sharded["final_return"] == one["final_return"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("hardware.devices=5",),
            "hardware.devices=5 divides neither num_seeds=8 nor the population (12): each device trains an equal "
            "share of the seeds, or else of each seed's population; use num_seeds=<a multiple of 5> or "
            "hardware.devices=<a divisor of 8 or 12>",
        ),
        (("hardware.devices=0",), "hardware.devices=0: expected a device count >= 1, or all"),
        (("hardware.devices=two",), "hardware.devices='two': expected a device count >= 1, or all"),
        (
            ("algo=sb3_ppo", "hardware.devices=2"),
            "algo=sb3_ppo trains one PyTorch process per seed; hardware.devices=2 shards the seeds of diffrl's JAX "
            "algorithms and the envs of Brax's agents (algo=ppo|sac|brax_apg)",
        ),
    ],
)
def test_impossible_device_counts_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_train(*overrides))
    assert str(err.value) == message


def test_device_counts_parse():
    assert requested_devices(1) == 1 and requested_devices("4") == 4 and requested_devices("all") == "all"
    for bad in (-1, "1.5", None):
        with pytest.raises(DeviceError):
            requested_devices(bad)


def test_a_refused_device_count_stops_the_cli_before_any_work(tmp_path):
    proc = run_diffrl("train", "algo=cem", "hardware.devices=5", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "diffrl train: error: hardware.devices=5 divides neither num_seeds=8 nor the population (24): each device "
        "trains an equal share of the seeds, or else of each seed's population; use num_seeds=<a multiple of 5> "
        "or hardware.devices=<a divisor of 8 or 24>"
    ]
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("metrics.jsonl"))
