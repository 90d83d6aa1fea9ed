"""How far an agent's state trajectory is from an expert's: ILD's learning objective (Chen, Ma, Xu 2022).

States are flat feature vectors (``diffrl.demo_file.state_features``), normalised by the caller.

- ``chamfer``: the two-way nearest-state distance, mean_t min_s d(a_t, e_s) + mean_s min_t d(a_t, e_s), with
  d(a, b) = sqrt(mean_f (a_f - b_f)^2), the root mean square over features (the authors' ``loss``). Each agent
  state is pulled to the expert state nearest it, and each expert state pulls the agent state nearest it:
  the agent may reach a pose a few steps early or late (ILD's "dynamic" objective).
- ``l2``: the time-aligned Euclidean distance, mean_t sqrt(sum_f (a_t - e_t)^2) (the authors' ``l2_loss``).
- ``l2_rms``: time-aligned, with the root mean square over features instead (diffrl's earlier ``l2``: a task
  with many bodies is not weighted more than one with few).

``valid`` [T] marks the agent states that count: ILD's authors' envs auto-reset, so a state after a
termination never entered their distance; here such a state is masked out (it adds nothing). With several
demonstrations the distance is the minimum over them (ILD's multi-demo variant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DISTANCES = ("chamfer", "l2", "l2_rms")
_EPS = 1e-12  # inside the square root: its gradient at 0 would be infinite


def pairwise_rms(agent: jax.Array, expert: jax.Array) -> jax.Array:
    """[T, F] x [S, F] -> [T, S]: d(agent_t, expert_s) for every pair."""
    squared = jnp.mean((agent[:, None, :] - expert[None, :, :]) ** 2, axis=-1)
    return jnp.sqrt(squared + _EPS)


def all_valid(agent: jax.Array) -> jax.Array:
    return jnp.ones(agent.shape[0], bool)


def masked_mean(values: jax.Array, valid: jax.Array) -> jax.Array:
    return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def chamfer_terms(agent: jax.Array, expert: jax.Array, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The two terms of the Chamfer distance of two state trajectories ([T, F] and [S, F]): forward, each valid
    agent state to its nearest expert state; backward, each expert state to its nearest valid agent state. An
    agent with no valid state at all is compared in full (it cannot escape the distance by ending at once)."""
    valid = all_valid(agent) if valid is None else valid
    valid = jnp.where(jnp.any(valid), valid, True)
    d = pairwise_rms(agent, expert)
    forward = masked_mean(jnp.min(d, axis=1), valid)
    backward = jnp.mean(jnp.min(jnp.where(valid[:, None], d, jnp.inf), axis=0))
    return forward, backward


def chamfer_distance(agent: jax.Array, expert: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Two-way Chamfer distance of two state trajectories ([T, F] and [S, F]) over the agent's valid states."""
    forward, backward = chamfer_terms(agent, expert, valid)
    return forward + backward


def aligned_distance(
    agent: jax.Array, expert: jax.Array, valid: jax.Array | None = None, euclidean: bool = True
) -> jax.Array:
    """Mean over the agent's valid steps of d(agent_t, expert_t), Euclidean (the authors') or RMS over
    features; the shorter trajectory sets the length compared."""
    steps = min(agent.shape[0], expert.shape[0])
    valid = (all_valid(agent) if valid is None else valid)[:steps]
    valid = jnp.where(jnp.any(valid), valid, True)
    reduce = jnp.sum if euclidean else jnp.mean
    d = jnp.sqrt(reduce((agent[:steps] - expert[:steps]) ** 2, axis=-1) + _EPS)
    return masked_mean(d, valid)


def trajectory_distance(
    agent: jax.Array, demos: jax.Array, kind: str = "chamfer", valid: jax.Array | None = None
) -> jax.Array:
    """Distance of one agent trajectory [T, F] (its valid states) to the nearest of ``demos`` [D, S, F]."""
    if kind not in DISTANCES:
        raise ValueError(f"unknown trajectory distance {kind!r}; valid choices: {', '.join(DISTANCES)}")
    if kind == "chamfer":
        one = lambda demo: chamfer_distance(agent, demo, valid)  # noqa: E731
    else:
        one = lambda demo: aligned_distance(agent, demo, valid, euclidean=kind == "l2")  # noqa: E731
    return jnp.min(jax.vmap(one)(demos))
