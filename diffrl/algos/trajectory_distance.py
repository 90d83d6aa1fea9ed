"""How far an agent's state trajectory is from an expert's: ILD's learning objective (Chen, Ma, Xu 2022).

States are flat feature vectors (``diffrl.demos.state_features``), normalised by the caller. The distance
between two states is the root mean square over features, d(a, b) = sqrt(mean_f (a_f - b_f)^2), so a
task with many bodies is not weighted more than one with few.

- ``chamfer``: the two-way nearest-state distance, mean_t min_s d(a_t, e_s) + mean_s min_t d(a_t, e_s).
  Each agent state is pulled to the expert state nearest it, and each expert state pulls the agent
  state nearest it: the agent may reach a pose a few steps early or late (ILD's "dynamic" objective).
- ``l2``: the time-aligned distance, mean_t d(a_t, e_t) (the authors' option).

With several demonstrations the distance is the minimum over them (ILD's multi-demo variant): the agent
is compared with the demonstration it is closest to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DISTANCES = ("chamfer", "l2")
_EPS = 1e-12  # inside the square root: its gradient at 0 would be infinite


def pairwise_rms(agent: jax.Array, expert: jax.Array) -> jax.Array:
    """[T, F] x [S, F] -> [T, S]: d(agent_t, expert_s) for every pair."""
    squared = jnp.mean((agent[:, None, :] - expert[None, :, :]) ** 2, axis=-1)
    return jnp.sqrt(squared + _EPS)


def chamfer_distance(agent: jax.Array, expert: jax.Array) -> jax.Array:
    """Two-way Chamfer distance of two state trajectories ([T, F] and [S, F])."""
    d = pairwise_rms(agent, expert)
    return jnp.mean(jnp.min(d, axis=1)) + jnp.mean(jnp.min(d, axis=0))


def aligned_distance(agent: jax.Array, expert: jax.Array) -> jax.Array:
    """Mean over time of d(agent_t, expert_t); the shorter trajectory sets the length compared."""
    steps = min(agent.shape[0], expert.shape[0])
    return jnp.mean(jnp.sqrt(jnp.mean((agent[:steps] - expert[:steps]) ** 2, axis=-1) + _EPS))


def trajectory_distance(agent: jax.Array, demos: jax.Array, kind: str = "chamfer") -> jax.Array:
    """Distance of one agent trajectory [T, F] to the nearest of ``demos`` [D, S, F]."""
    if kind not in DISTANCES:
        raise ValueError(f"unknown trajectory distance {kind!r}; valid choices: {', '.join(DISTANCES)}")
    one = chamfer_distance if kind == "chamfer" else aligned_distance
    return jnp.min(jax.vmap(lambda demo: one(agent, demo))(demos))
