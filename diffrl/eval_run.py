"""Evaluate a training run from its directory alone: ``.hydra/config.yaml`` + ``checkpoints/``."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

from diffrl.evaluation import make_episode_stats, task_metrics_hook
from diffrl.experiment import configure_jax, mean_std
from diffrl.loggers import to_jsonable
from diffrl.rollout import episode
from diffrl.run import load_policy

log = logging.getLogger("diffrl")


def load_run_config(run_dir: pathlib.Path):
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a diffrl run directory: {path} is missing")
    return OmegaConf.load(path)


def write_replay(exp, params, normalizer, key, path: pathlib.Path) -> int:
    """An HTML replay of one episode through Brax's viewer; returns the episode's length.

    The page is self-contained (``diffrl.viewer.render_offline``: three.js, lil-gui and Brax's viewer are inlined),
    so it renders without a network.

    The episode stops at its end: the frames after a termination are not shown. The env's ``replay``
    hook turns its pipeline states into something Brax's renderer draws (the swing-up tasks convert
    any backend's (q, qd) to maximal coordinates; Brax's own tasks render as they are).
    """
    from diffrl.viewer import render_offline

    trajectory = jax.jit(
        lambda p, n, k: episode(
            exp.env, exp.policy, p, n, exp.env.reset(k), exp.episode_length, record_pipeline_state=True
        )
    )(params, normalizer, key)
    length = max(int(np.sum(jax.device_get(trajectory.alive))), 1)
    sys, states = exp.env.replay(trajectory.pipeline_state)
    frames = [jax.tree.map(lambda x, i=i: x[i], states) for i in range(length)]
    path.write_text(render_offline(sys, frames))
    return length


def evaluate_run(
    run_dir: str | pathlib.Path,
    episodes: int = 16,
    seed: int = 12345,
    html: bool = False,
    platform: str = "cpu",
    early_exit: bool = False,
) -> dict[str, Any]:
    run_dir = pathlib.Path(run_dir).expanduser().absolute()
    cfg = load_run_config(run_dir)
    configure_jax(OmegaConf.merge(cfg.hardware, {"platform": platform}))
    exp, params, normalizer, iteration = load_policy(run_dir, cfg)
    key = jax.random.PRNGKey(seed)
    if early_exit and task_metrics_hook(exp.env) is not None:
        log.warning("early_exit=true does nothing on %s: its episode metrics read whole episodes", cfg.env.name)
        early_exit = False  # eval.json records what ran
    stats = jax.device_get(
        make_episode_stats(exp.env, exp.policy, exp.episode_length, episodes, early_exit=early_exit)(
            params, normalizer, key
        )
    )
    per_episode = {name: np.asarray(values) for name, values in stats.items()}
    per_seed = per_episode["return"].mean(axis=1)
    result = {
        "run_dir": str(run_dir),
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "backend": cfg.env.backend,
        "iteration": iteration,
        "episodes_per_seed": episodes,
        "episode_length_limit": exp.episode_length,
        "eval_seed": seed,
        "early_exit": early_exit,
    }
    for name, values in per_episode.items():  # return, length and the task's own metrics
        result[name] = mean_std(values.mean(axis=1).tolist())
        result[f"{name}_per_episode"] = values.tolist()
    if html:
        best = int(np.argmax(per_seed))
        pick = lambda tree: jax.tree.map(lambda x: x[best], tree)
        frames = write_replay(exp, pick(params), pick(normalizer), key, run_dir / "replay.html")
        result["replay"] = {"path": str(run_dir / "replay.html"), "seed_index": best, "frames": frames}
    (run_dir / "eval.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    print(describe(result, cfg, run_dir))
    return result


def describe(result: dict[str, Any], cfg, run_dir: pathlib.Path) -> str:
    """One line: return, episode length, and the task's own metrics."""
    line = (
        f"{cfg.algo.name} on {cfg.env.name} ({cfg.env.backend}), iteration {result['iteration']}: "
        f"return {result['return']['mean']:.2f} +- {result['return']['std']:.2f} "
        f"over {len(result['return']['per_seed'])} seeds x {result['episodes_per_seed']} episodes; "
        f"episode length {result['length']['mean']:.0f}/{result['episode_length_limit']}"
    )
    if "upright_fraction" in result:
        line += (
            f"; balanced (last 100 steps upright within 0.2 rad) {100 * result['upright_fraction']['mean']:.0f}% "
            "of the time"
        )
    return f"{line} -> {run_dir / 'eval.json'}"
