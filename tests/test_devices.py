"""One job across several devices (``hardware.devices``): the seed axis sharded over a mesh of CPU host
devices gives the run a one-device run gives, to float32 round-off (bit for bit is not promised: XLA may
vectorise a program for 2 seeds a device differently from one for 4); impossible device counts are refused
before compiling."""

import itertools
import json
import os

import numpy as np
import pytest

from diffrl.devices import DeviceError, requested_devices
from diffrl.experiment import ConfigError, check_config

from conftest import compose_train, run_diffrl

SMOKE = ("debug=smoke", "algo=cem", "logger.console.progress_bar=false")
ITERATIONS, EPISODE_STEPS = 4, 50  # debug=smoke's
# Float32 round-off, not a measured slack. A metric is a float32 sum of up to EPISODE_STEPS terms (a
# return); the same sum vectorised differently (another batch shape, another device count, AVX-512 vs
# AVX2) may differ by up to about one ulp per term, and training carries each iteration's difference
# into the next. Measured: 22.630186 vs 22.630184 (9e-8) on an Intel AVX-512 Xeon, identical on AMD EPYC.
ROUND_OFF = ITERATIONS * EPISODE_STEPS * float(np.finfo(np.float32).eps)  # 2.4e-5


def _runs(root):
    """{(devices, num_seeds): (metrics rows, summary)} of a sweep's jobs."""
    runs = {}
    for job in (root / "outputs").glob("multirun/*/*/*/"):
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "completed", summary.get("error")
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        runs[(summary["effective"]["devices"], summary["num_seeds"])] = (rows, summary)
    return runs


def per_seed(rows, summary) -> dict[str, np.ndarray]:
    """Every per-seed number of a run: each chunk's training returns, and the final evaluation's."""
    numbers = {f"return@{row['iteration']}": row["return"] for row in rows}
    numbers |= {f"train_episode_return@{row['iteration']}": row["train_episode_return"] for row in rows}
    numbers["final"] = summary["final_return"]["per_seed"]
    return {key: np.asarray(value, np.float64) for key, value in numbers.items()}


def assert_same_run_to_round_off(runs, sharded, reference):
    got, want = per_seed(*runs[sharded]), per_seed(*runs[reference])
    assert got.keys() == want.keys()
    for key in want:
        message = f"{sharded} vs {reference}: {key}"
        np.testing.assert_allclose(got[key], want[key], rtol=ROUND_OFF, atol=0, err_msg=message)


def test_seeds_sharded_over_two_devices_train_as_on_one_to_round_off(tmp_path, monkeypatch):
    """Both jobs of the sweep run under the XLA flags a sharded CPU run sets for itself (2 host devices, one
    thread each), so the 1-device run is the reference a user would compare against."""
    flags = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", f"{os.environ.get('XLA_FLAGS', '')} {flags}")
    run_diffrl("train", "-m", *SMOKE, "hardware.devices=1,2", "num_seeds=1,4", cwd=tmp_path)
    runs = _runs(tmp_path)
    assert set(runs) == {(1, 1), (2, 1), (1, 4), (2, 4)}
    log = (next((tmp_path / "outputs").glob("multirun/*/*/*devices=2,num_seeds=4*")) / "train.log").read_text()
    assert "4 seeds sharded over 2 devices" in log
    log = (next((tmp_path / "outputs").glob("multirun/*/*/*devices=2,num_seeds=1*")) / "train.log").read_text()
    assert "1 seeds, each seed's population (24) sharded over 2 devices" in log

    # Two seeds a device, and one seed's population split over both devices (each scores 12 candidates, the
    # elites are chosen from all 24): the numbers of one device, to round-off, seed by seed.
    assert [r["iteration"] for r in runs[(2, 4)][0]] == [2, 4]
    assert_same_run_to_round_off(runs, (2, 4), (1, 4))
    assert_same_run_to_round_off(runs, (2, 1), (1, 1))

    # The tolerance cannot hide a seed trained in another seed's place: seeds differ by far more than it.
    finals = per_seed(*runs[(1, 4)])["final"]
    for a, b in itertools.combinations(finals, 2):
        assert abs(a - b) > 100 * ROUND_OFF * max(abs(a), abs(b)), finals


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("hardware.devices=5",),
            "hardware.devices=5 divides neither num_seeds=8 nor the population (24): each device trains an equal "
            "share of the seeds, or else of each seed's population; use num_seeds=<a multiple of 5> or "
            "hardware.devices=<a divisor of 8 or 24>",
        ),
        (  # the population named on the command line, not the budget's, is the one that must divide
            ("hardware.devices=5", "algo.population=12", "algo.elites=4"),
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
