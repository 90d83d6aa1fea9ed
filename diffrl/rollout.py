"""The rollout core every algorithm shares: a policy driving an env for a fixed number of steps,
compiled as one ``lax.scan``. Differentiable end to end, so ``jax.grad`` of ``episode_return`` is
the analytic policy gradient; batching (candidates, start states, seeds) is ``vmap`` by the caller.

``GradientOptions`` shape how gradients flow back through time (they never change the forward
values): truncation every k steps, per-step cotangent clipping and rematerialisation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State

from diffrl.networks.policy import NormalizerState, Params, RecurrentPolicy


@dataclasses.dataclass(frozen=True)
class GradientOptions:
    truncation: int | None = None  # stop the gradient through the state every k steps (SHAC-like windows)
    step_clip: float | None = None  # clip the per-step cotangent of the state to this global norm (ILD)
    checkpoint: bool = False  # rematerialise each step on the backward pass: O(T) memory of the carry only


NO_GRADIENT_OPTIONS = GradientOptions()


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _clip_cotangent_leaves(leaves: list, max_norm: float) -> list:
    return leaves


def _clip_fwd(leaves, max_norm):
    return leaves, None


def _clip_bwd(max_norm, _, cotangents):
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in cotangents))
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-12))
    return ([g * scale for g in cotangents],)


_clip_cotangent_leaves.defvjp(_clip_fwd, _clip_bwd)


def clip_cotangent(tree, max_norm: float):
    """Identity on the forward pass; on the backward pass scales the cotangent of ``tree``'s float
    leaves to global norm <= ``max_norm``, so no single step can blow up the gradient."""
    leaves, treedef = jax.tree.flatten(tree)
    idx = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]
    clipped = _clip_cotangent_leaves([leaves[i] for i in idx], max_norm)
    for i, leaf in zip(idx, clipped):
        leaves[i] = leaf
    return jax.tree.unflatten(treedef, leaves)


def truncate_every(tree, step: jax.Array, k: int):
    """Stops the gradient through ``tree`` at every k-th step (forward values unchanged)."""
    cut = (step % k) == 0
    return jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x) if _is_float(x) else x, tree)


def rollout(
    env: Env,
    policy: RecurrentPolicy,
    params: Params,
    normalizer: NormalizerState,
    start: State,
    length: int,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
) -> tuple[jax.Array, jax.Array]:
    """Runs ``length`` control steps from ``start``; returns (rewards [T], observations seen [T, obs])."""

    def step(carry, t):
        state, hidden = carry
        if gradients.truncation:
            state, hidden = truncate_every((state, hidden), t, gradients.truncation)
        if gradients.step_clip:
            state, hidden = clip_cotangent((state, hidden), gradients.step_clip)
        hidden, action = policy.act(params, normalizer, hidden, state.obs)
        next_state = env.step(state, action)
        return (next_state, hidden), (next_state.reward, state.obs)

    if gradients.checkpoint:
        step = jax.checkpoint(step, prevent_cse=False)
    carry = (start, policy.initial_carry())
    _, (rewards, observations) = jax.lax.scan(step, carry, jnp.arange(length))
    return rewards, observations


def episode_return(
    env: Env,
    policy: RecurrentPolicy,
    params: Params,
    normalizer: NormalizerState,
    start: State,
    length: int,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
) -> jax.Array:
    """Undiscounted return of one episode; the quantity every table in diffrl reports."""
    rewards, _ = rollout(env, policy, params, normalizer, start, length, gradients)
    return jnp.sum(rewards)
