"""Returns over short windows of continuing envs: what SHAC's actor differentiates and its critic fits.

Arrays are time-major, ``[T, ...]`` (any batch shape after the time axis). ``next_values[t]`` is the
critic's value of the state reached by step ``t`` — already 0 where that step *terminated* the
episode (nothing follows a fall), and the value of the pre-reset observation where it ended by the
time limit (the episode would have gone on). ``done[t]`` marks the steps that ended an episode, by
either cause; the window's last step counts as an end too (the window is cut there and bootstraps).
Pure functions of arrays, written after the SHAC authors' code (NVlabs/DiffRL, ``shac.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def window_done_mask(done: jax.Array) -> jax.Array:
    """``done`` with the window's last step marked as an end (every env is cut there)."""
    return done.at[-1].set(jnp.ones_like(done[-1]))


def td_lambda_targets(
    rewards: jax.Array, next_values: jax.Array, done: jax.Array, gamma: float, lam: float
) -> jax.Array:
    """TD(λ) value targets for every step of a window, each a λ-mix of n-step returns that stops at
    the end of its episode (and at the window's end, where it bootstraps from ``next_values``).

    With no episode end inside the window: G_t = r_t + γ[(1 − λ) V_{t+1} + λ G_{t+1}], G_{T-1} = r + γ V_T.
    """
    done = window_done_mask(done.astype(rewards.dtype))

    def backward(carry, step):
        a, b, lam_t = carry
        reward, value, end = step
        lam_t = lam_t * lam * (1.0 - end) + end
        a = (1.0 - end) * (lam * gamma * a + gamma * value + (1.0 - lam_t) / (1.0 - lam) * reward)
        b = gamma * (value * end + b * (1.0 - end)) + reward
        return (a, b, lam_t), (1.0 - lam) * a + lam_t * b

    zeros = jnp.zeros_like(rewards[0])
    _, targets = jax.lax.scan(
        backward, (zeros, zeros, jnp.ones_like(zeros)), (rewards, next_values, done), reverse=True
    )
    return targets


def short_horizon_objective(rewards: jax.Array, next_values: jax.Array, done: jax.Array, gamma: float) -> jax.Array:
    """SHAC's actor objective (to maximise), summed over the batch and divided by T × batch size:
    for every episode segment inside the window, its discounted reward sum plus the discounted value
    where it ends (0 after a termination, the critic's after a time-out or at the window's end).
    The discount restarts with each new episode."""
    done = window_done_mask(done.astype(rewards.dtype))

    def forward(carry, step):
        accumulated, discount = carry
        reward, value, end = step
        accumulated = accumulated + discount * reward
        closed = end * (accumulated + gamma * discount * value)  # the segment's return, where it ends
        discount = jnp.where(end > 0, 1.0, discount * gamma)
        accumulated = jnp.where(end > 0, 0.0, accumulated)
        return (accumulated, discount), closed

    zeros = jnp.zeros_like(rewards[0])
    _, closed = jax.lax.scan(forward, (zeros, jnp.ones_like(zeros)), (rewards, next_values, done))
    return jnp.sum(closed) / rewards.size
