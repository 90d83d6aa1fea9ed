"""Making expert demonstrations for imitation (ILD, BC): ``diffrl demos`` trains an expert through the runner,
rolls it out and keeps its best full-length episodes as a demo file.

What a demo file holds, and reading and checking one, is ``diffrl.demo_file`` (re-exported here): the
imitation algorithms import that module alone, so the runner -> algorithms -> demos chain has no circle.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shlex
import sys
import time
from typing import Any

import jax
import numpy as np

from diffrl.demo_file import (
    DEMO_DIR,
    DemoError,
    Demos,
    check_demos_fit,
    default_demo_path,
    load_demos,
    make_command,
    save_demos,
    state_features,
    state_size,
)

log = logging.getLogger("diffrl")

__all__ = [
    "DEMO_DIR",
    "DemoError",
    "Demos",
    "best_full_length",
    "check_demos_fit",
    "default_demo_path",
    "demos_from_rollouts",
    "load_demos",
    "make_command",
    "make_demos",
    "rollout_episodes",
    "save_demos",
    "state_features",
    "state_size",
    "terminated_early",
]


# --- making demos -----------------------------------------------------------------------------------------
def rollout_episodes(env, policy, params, normalizer, key: jax.Array, episodes: int, length: int, stochastic: bool):
    """``episodes`` episodes of ``length`` steps from fresh start states: (reset keys, start states'
    features, trajectory whose ``pipeline_state`` holds the states' features), all with a leading episode axis."""
    from diffrl.rollout import episode

    def one(episode_key):
        reset_key, action_key = jax.random.split(episode_key)
        state = env.reset(reset_key)
        sample_with = action_key if stochastic else None
        trajectory = episode(
            env, policy, params, normalizer, state, length, record_pipeline_state=state_features, action_key=sample_with
        )
        return reset_key, state_features(state.pipeline_state), trajectory

    return jax.jit(jax.vmap(one))(jax.random.split(key, episodes))


def terminated_early(trajectory) -> np.ndarray:
    """[E]: whether each episode of a rollout batch ended by a termination (a fall), not the time limit. A
    termination on the very last step counts too: the body fell."""
    ended = (np.asarray(trajectory.done) > 0) & (np.asarray(trajectory.truncation) == 0)
    return np.any(ended & np.asarray(trajectory.alive, bool), axis=1)


def best_full_length(returns: np.ndarray, terminated: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` highest-return episodes that never terminated, best first."""
    full = np.flatnonzero(~terminated)
    return full[np.argsort(-returns[full], kind="stable")][:keep]


def demos_from_rollouts(task: str, backend: str, reset_keys, start_states, trajectory, keep: int) -> Demos:
    """The best ``keep`` full-length episodes of a rollout batch, as ``Demos``."""
    trajectory = jax.device_get(trajectory)
    returns = np.sum(trajectory.reward, axis=1)
    chosen = best_full_length(returns, terminated_early(trajectory), keep)
    if chosen.size == 0:
        raise DemoError(
            f"every one of the expert's {len(returns)} episodes on {task!r} terminated early: no full-length "
            "demonstration; train the expert longer (budget=paper, or iterations=<more env steps>)"
        )
    states = np.asarray(trajectory.pipeline_state)  # already state_features
    return Demos(
        task=task,
        backend=backend,
        observation=trajectory.observation[chosen],
        action=trajectory.action[chosen],
        reward=trajectory.reward[chosen],
        state=states[chosen],
        start_state=np.asarray(start_states)[chosen],
        reset_key=np.asarray(reset_keys)[chosen],
        returns=returns[chosen],
    )


def demos_output_path(cfg, run_dir: pathlib.Path) -> pathlib.Path:
    out = cfg.demos.get("out")
    return pathlib.Path(out).expanduser() if out else pathlib.Path(run_dir) / f"{cfg.env.name}.npz"


def make_demos(cfg, run_dir: pathlib.Path) -> dict[str, Any]:
    """``diffrl demos``: train the expert (``algo``, e.g. Brax PPO) into ``run_dir`` with ``demos.length``-step
    episodes, roll it out ``demos.rollouts`` times (sampling its actions if it is stochastic), keep the best
    ``demos.keep`` full-length episodes; writes the demo file and its provenance; returns the provenance."""
    from omegaconf import OmegaConf

    from diffrl.baselines.common import FeedForwardPolicy
    from diffrl.experiment import git_commit, machine_description, package_versions
    from diffrl.run import load_policy, train

    run_dir = pathlib.Path(run_dir)
    t0 = time.perf_counter()
    summary = train(cfg, run_dir)
    train_seconds = time.perf_counter() - t0
    exp, params, normalizer, _ = load_policy(run_dir, cfg)
    first_seed = lambda tree: jax.tree.map(lambda x: x[0], tree)
    policy = exp.policy
    stochastic = bool(cfg.demos.stochastic)
    if stochastic and isinstance(policy, FeedForwardPolicy):  # Brax's networks sample when asked to
        policy = dataclasses.replace(policy, stochastic=True)
    length = int(cfg.demos.length)
    key = jax.random.PRNGKey(int(cfg.seed) + 7_919)
    reset_keys, start_states, trajectory = rollout_episodes(
        exp.env,
        policy,
        first_seed(params),
        first_seed(normalizer),
        key,
        int(cfg.demos.rollouts),
        length,
        stochastic=stochastic and policy.stochastic,
    )
    demos = demos_from_rollouts(
        cfg.env.name, cfg.env.backend, reset_keys, start_states, trajectory, int(cfg.demos.keep)
    )
    path = demos_output_path(cfg, run_dir)
    provenance = {
        "task": cfg.env.name,
        "backend": cfg.env.backend,
        "command": "diffrl demos " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "expert": cfg.algo.name,
        "expert_run_dir": str(run_dir.absolute()),
        "expert_training_s": round(train_seconds, 1),  # the whole expert run: compiles, training, its evaluation
        "expert_final_return": summary["final_return"],
        "episode_length": length,
        "rollouts": int(cfg.demos.rollouts),
        "stochastic_rollouts": stochastic and policy.stochastic,
        "full_length_rollouts": int(np.sum(~terminated_early(jax.device_get(trajectory)))),
        "kept": demos.episodes,
        "returns": [round(float(r), 3) for r in demos.returns],
        "state_size": int(demos.state.shape[-1]),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "machine": machine_description(),
        "git_commit": git_commit(),
    }
    save_demos(path, demos, provenance)
    log.info(
        "%d demos of %s (%d steps), returns %.2f (best) .. %.2f; the expert trained for %.0f s -> %s",
        demos.episodes,
        cfg.env.name,
        length,
        demos.returns[0],
        demos.returns[-1],
        train_seconds,
        path,
    )
    return provenance
