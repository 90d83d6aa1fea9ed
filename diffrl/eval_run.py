"""Evaluate a training run from its directory alone: ``.hydra/config.yaml`` + ``checkpoints/``."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

from diffrl.baselines import EXTERNAL_TRAINERS
from diffrl.checkpoint import Checkpointer
from diffrl.evaluation import make_episode_stats, run_episode
from diffrl.loggers import to_jsonable
from diffrl.run import build_experiment, configure_jax, mean_std, seed_keys

log = logging.getLogger("diffrl")


def load_run_config(run_dir: pathlib.Path):
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a diffrl run directory: {path} is missing")
    return OmegaConf.load(path)


def load_policy(run_dir: pathlib.Path):
    """(experiment, config, params [seeds], normalizer [seeds], iteration) from the latest checkpoint."""
    cfg = load_run_config(run_dir)
    if cfg.algo.name in EXTERNAL_TRAINERS:  # PPO, SAC, SB3...: per-seed policies saved by their own trainer
        from diffrl.baselines.runner import load_external_policy

        return load_external_policy(run_dir, cfg)
    exp = build_experiment(cfg)
    like = jax.jit(jax.vmap(exp.algo.init))(seed_keys(int(cfg.seed), int(cfg.num_seeds)))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    try:
        states, host = checkpointer.restore(like)
    finally:
        checkpointer.close()
    params, normalizer = jax.jit(jax.vmap(exp.algo.policy_params))(states)
    return exp, cfg, params, normalizer, host["iteration"]


def write_replay(exp, params, normalizer, key, path: pathlib.Path) -> None:
    """A self-contained HTML replay through Brax's renderer (three.js is loaded from a CDN)."""
    from brax.generalized import pipeline as generalized
    from brax.io import html, mjcf

    record_pipeline_state = lambda state: state.pipeline_state
    states = jax.jit(
        lambda p, n, k: run_episode(
            exp.env, exp.policy, p, n, exp.env.reset(k), exp.episode_length, record_pipeline_state
        )
    )(params, normalizer, key)
    # Any backend (the closed form has no Brax system) -> maximal coordinates for the renderer,
    # through the generalized pipeline's init on the task's own MJCF.
    sys = mjcf.loads(exp.env.unwrapped.task.xml)
    frames = jax.jit(jax.vmap(lambda q, qd: generalized.init(sys, q, qd)))(states.q, states.qd)
    frames = [jax.tree.map(lambda x, i=i: x[i], frames) for i in range(exp.episode_length)]
    path.write_text(html.render(sys.tree_replace({"opt.timestep": exp.env.dt}), frames))


def evaluate_run(
    run_dir: str | pathlib.Path, episodes: int = 16, seed: int = 12345, html: bool = False, platform: str = "cpu"
) -> dict[str, Any]:
    run_dir = pathlib.Path(run_dir).expanduser().absolute()
    cfg = load_run_config(run_dir)
    configure_jax(OmegaConf.merge(cfg.hardware, {"platform": platform}))
    exp, cfg, params, normalizer, iteration = load_policy(run_dir)
    key = jax.random.PRNGKey(seed)
    stats = jax.device_get(
        make_episode_stats(exp.env, exp.policy, exp.episode_length, episodes)(params, normalizer, key)
    )
    returns, upright = np.asarray(stats["return"]), np.asarray(stats["upright_fraction"])
    per_seed = returns.mean(axis=1)
    result = {
        "run_dir": str(run_dir),
        "env": cfg.env.name,
        "algo": cfg.algo.name,
        "backend": cfg.env.backend,
        "iteration": iteration,
        "episodes_per_seed": episodes,
        "eval_seed": seed,
        "return": mean_std(per_seed.tolist()),
        "returns_per_episode": returns.tolist(),
        # Share of the last 100 steps with every link within 0.2 rad of upright: balancing, not spinning.
        "upright_fraction": mean_std(upright.mean(axis=1).tolist()),
        "upright_fraction_per_episode": upright.tolist(),
    }
    if html:
        best = int(np.argmax(per_seed))
        pick = lambda tree: jax.tree.map(lambda x: x[best], tree)
        write_replay(exp, pick(params), pick(normalizer), key, run_dir / "replay.html")
        result["replay"] = str(run_dir / "replay.html")
    (run_dir / "eval.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    print(
        f"{cfg.algo.name} on {cfg.env.name} ({cfg.env.backend}), iteration {iteration}: "
        f"return {result['return']['mean']:.2f} +- {result['return']['std']:.2f} "
        f"over {len(per_seed)} seeds x {episodes} episodes; balanced (last 100 steps upright within 0.2 rad) "
        f"{100 * result['upright_fraction']['mean']:.0f}% of the time -> {run_dir / 'eval.json'}"
    )
    return result
