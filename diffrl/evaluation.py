"""Deterministic evaluation: every seed's policy on the same start states, compiled as one program.

It is the training rollout (``diffrl.rollout.unroll``) with the mean action and no auto-reset: an
episode ends at a termination or at ``episode_length`` steps, and steps after the end are masked.
Task-specific measures come from the env's ``episode_metrics`` hook (the swing-up tasks report
``upright_fraction``); generic code never names a task.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import episode


def task_metrics_hook(env: Env):
    """The env's ``episode_metrics(pipeline_states, alive) -> dict`` hook, or None (Brax wrappers
    forward attribute look-ups to the env they wrap)."""
    return getattr(env, "episode_metrics", None)


def make_episode_stats(env: Env, policy: Policy, episode_length: int, episodes: int, sample_actions: bool = False):
    """Returns jitted ``stats(params, normalizer, key) -> {"return", "length", <task metrics>}``, each
    [seeds, episodes]: the undiscounted return, the episode's length in steps (shorter than
    ``episode_length`` when it terminated) and whatever the task's ``episode_metrics`` hook reports.

    ``params`` and ``normalizer`` carry a leading seed axis; all seeds see the same start states.
    ``sample_actions``: a stochastic policy samples its actions (ILD's authors evaluated so) instead of acting
    with its mean; the noise differs per episode and is the same for every seed.
    """
    hook = task_metrics_hook(env)

    def one_episode(params: Params, normalizer: NormalizerState, start_state, action_key) -> dict[str, jax.Array]:
        record = hook is not None
        trajectory = episode(
            env,
            policy,
            params,
            normalizer,
            start_state,
            episode_length,
            record_pipeline_state=record,
            action_key=action_key if sample_actions else None,
        )
        out = {"return": jnp.sum(trajectory.reward), "length": jnp.sum(trajectory.alive)}
        if hook is not None:
            out.update(hook(trajectory.pipeline_state, trajectory.alive))
        return out

    @jax.jit
    def stats(params: Params, normalizer: NormalizerState, key: jax.Array) -> dict[str, Any]:
        starts = jax.vmap(env.reset)(jax.random.split(key, episodes))
        action_keys = jax.random.split(jax.random.fold_in(key, 1), episodes)
        per_seed = lambda p, n: jax.vmap(lambda s, k: one_episode(p, n, s, k))(starts, action_keys)
        return jax.vmap(per_seed)(params, normalizer)

    return stats


def make_evaluator(env: Env, policy: Policy, episode_length: int, episodes: int):
    """Returns jitted ``evaluate(params, normalizer, key) -> returns [seeds, episodes]``."""
    stats = make_episode_stats(env, policy, episode_length, episodes)
    return jax.jit(lambda params, normalizer, key: stats(params, normalizer, key)["return"])
