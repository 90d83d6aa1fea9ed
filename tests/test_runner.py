"""The runner end to end: run directory layout, metrics, determinism, eval (resume after SIGKILL: test_resume.py)."""

import json

import numpy as np
import yaml

from diffrl.run import train

from conftest import deterministic_part, read_metrics, run_diffrl

SMOKE = ("debug=smoke", "logger.console.progress_bar=false", "algo=cem")  # CEM: the cheapest runner exercise


def test_train_writes_metrics_summary_and_checkpoints(fast_cfg, tmp_path):
    summary = train(fast_cfg("algo=cem"), tmp_path)
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [2, 4]  # one line per chunk
    for key in ("env_steps", "wall_time_s", "return", "return_mean", "steps_per_second", "nonfinite_candidates"):
        assert key in rows[-1]
    assert len(rows[-1]["return"]) == 2  # one per vmapped seed
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["final_return"]["mean"] == summary["final_return"]["mean"]
    assert len(on_disk["final_return"]["per_seed"]) == 2
    assert on_disk["backend"] == "analytic" and on_disk["versions"]["jax"]
    assert on_disk["env_steps_per_seed"] == 4 * (24 + 1) * 50  # 24 candidates and the rollout of the mean reported
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]


def test_same_config_and_seed_give_identical_metrics(fast_cfg, tmp_path):
    first = train(fast_cfg("algo=cem"), tmp_path / "a")
    second = train(fast_cfg("algo=cem"), tmp_path / "b")
    assert [deterministic_part(r) for r in read_metrics(tmp_path / "a")] == [
        deterministic_part(r) for r in read_metrics(tmp_path / "b")
    ]
    assert first["final_return"] == second["final_return"]
    assert train(fast_cfg("algo=cem", "seed=1"), tmp_path / "c")["final_return"] != first["final_return"]


def test_multirun_puts_each_job_in_its_own_directory(tmp_path):
    run_diffrl("train", "-m", "env=acrobot", "seed=0,1", *SMOKE, "iterations=2", cwd=tmp_path)
    jobs = sorted(p for p in (tmp_path / "outputs").glob("multirun/*/*/*") if p.is_dir())
    # <n>_<task>_<algo>_seed<seed>_<the job's other overrides>; a sweep over a table's cells: test_records.py
    assert [p.name for p in jobs] == [
        "0_acrobot_cem_seed0_debug=smoke,iterations=2",
        "1_acrobot_cem_seed1_debug=smoke,iterations=2",
    ]
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["env"] in job.name and f"seed{summary['seed']}" in job.name
        assert (job / ".hydra" / "config.yaml").exists() and (job / "train.log").exists()


def test_eval_rebuilds_the_policy_from_the_run_directory_alone(tmp_path):
    run_diffrl("train", *SMOKE, "logger.wandb.enabled=true", cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs").glob("train/*/*")
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb writes an offline run into the run directory"
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["env"]["name"] == "acrobot"

    proc = run_diffrl("eval", f"run_dir={run_dir}", "episodes=3", "html=true", cwd=tmp_path)
    result = json.loads((run_dir / "eval.json").read_text())
    assert np.asarray(result["return_per_episode"]).shape == (2, 3)
    assert result["length_per_episode"] == [[50] * 3] * 2  # the swing-ups never end early
    assert np.asarray(result["upright_fraction_per_episode"]).shape == (2, 3)  # the task's own metric
    assert result["iteration"] == 4
    assert "return" in proc.stdout
    html = (run_dir / "replay.html").read_text()
    assert "brax-viewer" in html and "new Viewer(" in html  # trajectory is embedded (compressed)


def test_training_episode_returns_are_averaged_over_a_chunk_and_never_nan():
    from diffrl.run import summarize_chunk

    metrics = {  # [iterations, seeds]: seed 1 finishes no episode in this chunk
        "train_episode_return_sum": np.array([[10.0, 0.0], [20.0, 0.0], [0.0, 0.0]]),
        "train_episode_return_count": np.array([[1, 0], [3, 0], [0, 0]]),
        "return": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
    }
    row = summarize_chunk(metrics)
    assert row["train_episode_return"] == [7.5, None]  # (10 + 20) / 4 over the chunk; nothing for seed 1
    assert row["train_episode_return_mean"] == 7.5 and row["train_episode_return_count"] == 4
    assert row["return"] == [5.0, 6.0] and "train_episode_return_sum" not in row
    none = summarize_chunk({k: v * 0 for k, v in metrics.items() if k.startswith("train")})
    assert none["train_episode_return"] == [None, None] and none["train_episode_return_mean"] is None


def test_cem_logs_its_training_episodes_and_the_effective_options(fast_cfg, tmp_path):
    train(fast_cfg("algo=cem", "algo.population=6", "algo.elites=2"), tmp_path)
    rows = read_metrics(tmp_path)
    # 6 candidates x 1 episode each x 2 iterations per chunk, 50 steps each (smoke episodes never end early)
    assert rows[-1]["train_episode_return_count"] == 2 * 6 * 2  # summed over the 2 seeds
    assert rows[-1]["train_episode_length"] == [50.0, 50.0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["effective"]["algo"]["population"] == 6 and summary["effective"]["policy"]["name"] == "gru"
    assert summary["effective"]["policy"]["hidden_size"] == 16  # null in the config: the paper's width
    assert summary["final_episode_length"]["mean"] == 50
