"""Deterministic evaluation: every seed's policy on the same start states, compiled as one program."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from diffrl.networks.policy import NormalizerState, Params, RecurrentPolicy


def make_episode_stats(env: Env, policy: RecurrentPolicy, episode_length: int, episodes: int, tail: int = 100):
    """Returns jitted ``stats(params, normalizer, key) -> {"return", "upright_fraction"}``, each
    [seeds, episodes]: the undiscounted return, and the fraction of the last ``tail`` steps with every
    link within 0.2 rad of upright (does the policy *balance*, or swing through the top?).

    ``params`` and ``normalizer`` carry a leading seed axis; all seeds see the same start states.
    """
    task = env.unwrapped.task

    def one_episode(params: Params, normalizer: NormalizerState, start) -> dict[str, jax.Array]:
        record = lambda state: (state.reward, task.upright(state.pipeline_state.q))
        rewards, upright = run_episode(env, policy, params, normalizer, start, episode_length, record)
        return {"return": jnp.sum(rewards), "upright_fraction": jnp.mean(upright[-tail:])}

    @jax.jit
    def stats(params: Params, normalizer: NormalizerState, key: jax.Array) -> dict[str, jax.Array]:
        starts = jax.vmap(env.reset)(jax.random.split(key, episodes))
        per_seed = lambda p, n: jax.vmap(lambda s: one_episode(p, n, s))(starts)
        return jax.vmap(per_seed)(params, normalizer)

    return stats


def make_evaluator(env: Env, policy: RecurrentPolicy, episode_length: int, episodes: int):
    """Returns jitted ``evaluate(params, normalizer, key) -> returns [seeds, episodes]``."""
    stats = make_episode_stats(env, policy, episode_length, episodes)
    return jax.jit(lambda params, normalizer, key: stats(params, normalizer, key)["return"])


def run_episode(
    env: Env,
    policy: RecurrentPolicy,
    params: Params,
    normalizer: NormalizerState,
    start,
    length: int,
    record: Callable[[State], Any],
) -> Any:
    """One deterministic episode from ``start``; returns ``record(state)`` of every step, stacked over time."""

    def step(carry, _):
        state, hidden = carry
        hidden, action = policy.act(params, normalizer, hidden, state.obs)
        state = env.step(state, action)
        return (state, hidden), record(state)

    _, recorded = jax.lax.scan(step, (start, policy.initial_carry()), None, length)
    return recorded
