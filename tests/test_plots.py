"""``diffrl plot`` from hand-made metrics.jsonl: jitted (per-seed lists) and external (seed_index) rows."""

import json

import numpy as np
import yaml

from diffrl.plots import mean_band, seed_curves, write_plots


def make_job(sweep_dir, algo, task, rows):
    job = sweep_dir / f"{task}_{algo}"
    (job / ".hydra").mkdir(parents=True)
    config = {"algo": {"name": algo}, "env": {"name": task}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def jitted_rows(n=5):
    return [
        {"iteration": i, "env_steps": 100 * i, "wall_time_s": 0.5 * i, "return": [i, 2.0 * i], "return_mean": 1.5 * i}
        for i in range(1, n + 1)
    ]


def external_rows(n=4):
    return [
        {"seed_index": s, "iteration": s * n + i, "env_steps": 250 * i, "wall_time_s": 1.0 * i, "return": 10.0 * i + s}
        for s in range(2)
        for i in range(1, n + 1)
    ]


def test_seed_curves_from_both_row_layouts():
    jitted = seed_curves(jitted_rows())
    assert len(jitted) == 2 and jitted[1]["return"].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    external = seed_curves(external_rows())
    assert len(external) == 2 and external[1]["env_steps"].tolist() == [250, 500, 750, 1000]
    x, mean, std = mean_band(jitted, "env_steps")
    assert x[0] == 100 and x[-1] == 500
    assert np.allclose(mean, 1.5 * x / 100) and np.allclose(std, 0.5 * x / 100)


def test_plots_are_written_as_png_and_svg(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, "cem", "acrobot", jitted_rows())
    make_job(sweep, "ppo", "acrobot", external_rows())
    make_job(sweep, "cem", "cartpole_swingup", jitted_rows(1))  # a single report still plots
    paths = write_plots([sweep], tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == [
        "curves_acrobot.png",
        "curves_acrobot.svg",
        "curves_all.png",  # every task side by side (a column each)
        "curves_all.svg",
        "curves_cartpole_swingup.png",
        "curves_cartpole_swingup.svg",
    ]
    for path in paths:
        assert path.stat().st_size > 5000
    assert (tmp_path / "out" / "curves_acrobot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "out" / "curves_acrobot.svg").read_text()
