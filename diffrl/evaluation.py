"""Deterministic evaluation: every seed's policy on the same start states, compiled as one program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from diffrl.networks.policy import NormalizerState, Params, RecurrentPolicy
from diffrl.rollout import rollout


def make_evaluator(env: Env, policy: RecurrentPolicy, episode_length: int, episodes: int):
    """Returns jitted ``evaluate(params, normalizer, key) -> returns [seeds, episodes]``.

    ``params`` and ``normalizer`` carry a leading seed axis; all seeds see the same start states.
    """

    def one_seed(params: Params, normalizer: NormalizerState, starts) -> jax.Array:
        run = lambda start: jnp.sum(rollout(env, policy, params, normalizer, start, episode_length)[0])
        return jax.vmap(run)(starts)

    @jax.jit
    def evaluate(params: Params, normalizer: NormalizerState, key: jax.Array) -> jax.Array:
        starts = jax.vmap(env.reset)(jax.random.split(key, episodes))
        return jax.vmap(one_seed, in_axes=(0, 0, None))(params, normalizer, starts)

    return evaluate


def trajectory(env: Env, policy: RecurrentPolicy, params: Params, normalizer: NormalizerState, key, length: int):
    """One deterministic episode's states (for replays and plots): pipeline states, obs, actions, rewards."""

    def step(carry, _):
        state, hidden = carry
        hidden, action = policy.act(params, normalizer, hidden, state.obs)
        next_state = env.step(state, action)
        return (next_state, hidden), (next_state.pipeline_state, next_state.obs, action, next_state.reward)

    start = env.reset(key)
    _, (pipeline_states, obs, actions, rewards) = jax.lax.scan(step, (start, policy.initial_carry()), None, length)
    return start, pipeline_states, obs, actions, rewards
