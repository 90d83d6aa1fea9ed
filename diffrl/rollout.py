"""The rollout core every algorithm shares: a policy driving an env for a fixed number of steps,
compiled as one ``lax.scan``. Differentiable end to end, so ``jax.grad`` of ``episode_return`` is
the analytic policy gradient; batching (candidates, start states, seeds) is ``vmap`` by the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from diffrl.networks.policy import NormalizerState, Params, RecurrentPolicy


def rollout(
    env: Env,
    policy: RecurrentPolicy,
    params: Params,
    normalizer: NormalizerState,
    start: State,
    length: int,
) -> tuple[jax.Array, jax.Array]:
    """Runs ``length`` control steps from ``start``; returns (rewards [T], observations seen [T, obs])."""

    def step(carry, _):
        state, hidden = carry
        hidden, action = policy.act(params, normalizer, hidden, state.obs)
        next_state = env.step(state, action)
        return (next_state, hidden), (next_state.reward, state.obs)

    _, (rewards, observations) = jax.lax.scan(step, (start, policy.initial_carry()), None, length=length)
    return rewards, observations


def episode_return(
    env: Env,
    policy: RecurrentPolicy,
    params: Params,
    normalizer: NormalizerState,
    start: State,
    length: int,
) -> jax.Array:
    """Undiscounted return of one episode; the quantity every table in diffrl reports."""
    rewards, _ = rollout(env, policy, params, normalizer, start, length)
    return jnp.sum(rewards)
