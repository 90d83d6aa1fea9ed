"""The rollout core every algorithm and the evaluator share: a policy driving an env, one ``lax.scan``.

``unroll`` runs ``length`` steps from a ``RolloutCarry`` and returns the carry to continue from and a
per-step ``Trajectory``. Episodes end when the env says ``done`` or its observation is no longer finite (both
terminations: a diverged body's NaN height would never satisfy a height test) or when the time limit
``episode_length`` is reached (a truncation); then either
- the episode is over for good (``auto_reset=False``: evaluation, CEM, APG): later steps are masked, they
  add no reward and count as not alive; or
- the env starts a new episode (``auto_reset=True``: SHAC-style windows over continuing envs): the state
  is replaced by a fresh start state, the policy's recurrent carry by its initial value.

Differentiable end to end, so ``jax.grad`` of ``episode_return`` is the analytic policy gradient;
batching (candidates, start states, seeds, envs) is ``vmap`` by the caller. ``GradientOptions`` shape
how gradients flow back through time (they never change the forward values): truncation every k
steps, per-step cotangent clipping and rematerialisation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import Env, State
from flax import struct

from diffrl.networks.base import Carry, NormalizerState, Params, Policy


@dataclasses.dataclass(frozen=True)
class GradientOptions:
    truncation: int | None = None  # stop the gradient through the state every k steps (SHAC-like windows)
    step_clip: float | None = None  # clip the per-step cotangent of the state to this global norm, and cut a
    # step whose backward pass is not finite (ILD)
    step_clip_axis: str | None = None  # the clip's norm is over this vmapped axis too (ROLLOUT_AXIS: the whole
    # batch of rollouts, as ILD's authors clipped their batched state); None: each rollout's own cotangent
    checkpoint: bool = False  # rematerialise each step on the backward pass: O(T) memory of the carry only


NO_GRADIENT_OPTIONS = GradientOptions()
# The vmap axis of a batch of rollouts that share one per-step clip (``GradientOptions.step_clip_axis``).
ROLLOUT_AXIS = "rollouts"


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)


def _through_float_leaves(tree, fn):
    """``tree`` with its float leaves replaced by ``fn(list of them)``; other leaves (ints, keys) untouched:
    the custom-VJP guards below act on what can carry a cotangent."""
    leaves, treedef = jax.tree.flatten(tree)
    idx = [i for i, leaf in enumerate(leaves) if _is_float(leaf)]
    for i, leaf in zip(idx, fn([leaves[i] for i in idx])):
        leaves[i] = leaf
    return jax.tree.unflatten(treedef, leaves)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _clip_cotangent_leaves(leaves: list, max_norm: float, axis: str | None) -> list:
    return leaves


def _clip_fwd(leaves, max_norm, axis):
    return leaves, None


def _clip_bwd(max_norm, axis, _, cotangents):
    squared = sum(jnp.sum(g**2) for g in cotangents)
    norm = jnp.sqrt(jax.lax.psum(squared, axis) if axis else squared)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-12))
    return ([g * scale for g in cotangents],)


_clip_cotangent_leaves.defvjp(_clip_fwd, _clip_bwd)


def clip_cotangent(tree, max_norm: float, axis: str | None = None):
    """Identity on the forward pass; on the backward pass scales the cotangent of ``tree``'s float
    leaves to global norm <= ``max_norm``, so no single step can blow up the gradient. With ``axis`` (a vmap
    axis name in scope) the norm is that of the whole batch's cotangent, and every member is scaled alike."""
    return _through_float_leaves(tree, lambda floats: _clip_cotangent_leaves(floats, max_norm, axis))


@jax.custom_vjp
def _finite_cotangent_leaves(leaves: list, cut_probe: jax.Array) -> list:
    return leaves


def _finite_fwd(leaves, cut_probe):
    return leaves, cut_probe


def _finite_bwd(cut_probe, cotangents):
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in cotangents]))
    # The probe's cotangent reports the cut: 1 where this step's cotangent was zeroed, 0 where it passed.
    cut = jnp.broadcast_to((~finite).astype(cut_probe.dtype), cut_probe.shape)
    return [jnp.where(finite, g, jnp.zeros_like(g)) for g in cotangents], cut


_finite_cotangent_leaves.defvjp(_finite_fwd, _finite_bwd)


def finite_cotangent(tree, cut_probe: jax.Array | None = None):
    """Identity on the forward pass; on the backward pass a cotangent of ``tree``'s float leaves that is not
    finite anywhere becomes zero in all of them: that step passes no gradient further back (a truncation
    there), instead of a NaN that would void the whole update. MJX's one-iteration constraint solver can
    return a NaN cotangent from a step whose forward values are finite (ILD on the inverted pendulum).

    ``cut_probe``: a float scalar (0) the forward ignores; its gradient counts the cuts. A cut is a fact of the
    backward pass alone, so the count can only come out of it: each cut step adds 1 to the probe's
    cotangent, and JAX sums that over the steps of a scan and the members of a vmap that share the probe (a
    vmapped rollout that depends on nothing batched is computed once, so it counts once)."""
    probe = jnp.zeros(()) if cut_probe is None else cut_probe
    return _through_float_leaves(tree, lambda floats: _finite_cotangent_leaves(floats, probe))


def truncate_every(tree, step: jax.Array, k: int):
    """Stops the gradient through ``tree`` at every k-th step (forward values unchanged)."""
    cut = (step % k) == 0
    return jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x) if _is_float(x) else x, tree)


@struct.dataclass
class RolloutCarry:
    """Where a rollout stands: what ``unroll`` takes and returns, so rollouts can continue."""

    state: State  # the env's state
    policy_carry: Carry  # the policy's recurrent state (empty for feed-forward policies)
    steps: jax.Array  # steps taken in the current episode
    alive: jax.Array  # False once the episode has ended (without auto-reset)
    key: jax.Array  # action noise and fresh start states


@struct.dataclass
class Trajectory:
    """Per-step record of an unroll (leading axis: time)."""

    observation: jax.Array  # what the policy saw
    action: jax.Array
    reward: jax.Array  # 0 on steps after the episode ended (without auto-reset)
    done: jax.Array  # the episode ended at this step: terminated or truncated (1.0 / 0.0)
    truncation: jax.Array  # ended by the time limit, not by a termination
    next_observation: jax.Array  # after the step, before any reset (a time-out bootstraps from it)
    alive: jax.Array  # the step belongs to a running episode (reward counted)
    pipeline_state: Any = None  # the physics state after the step (or what a function makes of it), when asked for


def diverged(observation: jax.Array) -> jax.Array:
    """[...]: whether each env's observation [..., obs] holds a non-finite entry. Its episode ends there (and
    restarts under ``auto_reset``, as SHAC's authors reset their humanoid's NaN envs)."""
    return ~jnp.all(jnp.isfinite(observation), axis=-1)


def terminations(trajectory: Trajectory) -> jax.Array:
    """[..., T]: the steps at which an episode terminated (the env's ``done``, or its observation ``diverged``;
    a time-out is no termination)."""
    return (trajectory.done > 0) & (trajectory.truncation == 0)


def start(env: Env, policy: Policy, key: jax.Array) -> RolloutCarry:
    """A fresh episode from ``env.reset``."""
    reset_key, key = jax.random.split(key)
    return start_from(env.reset(reset_key), policy, key)


def start_from(state: State, policy: Policy, key: jax.Array) -> RolloutCarry:
    """A fresh episode from a given start state (``key`` draws action noise and later resets)."""
    return RolloutCarry(state, policy.initial_carry(), jnp.zeros((), jnp.int32), jnp.ones((), bool), key)


def unroll(
    env: Env,
    policy: Policy,
    params: Params,
    normalizer: NormalizerState,
    carry: RolloutCarry,
    length: int,
    *,
    episode_length: int | None = None,
    auto_reset: bool = False,
    deterministic: bool = True,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
    record_pipeline_state: bool | Callable[[Any], Any] = False,
    cut_probe: jax.Array | None = None,
    restart_state: State | None = None,
) -> tuple[RolloutCarry, Trajectory]:
    """Runs ``length`` control steps from ``carry``; returns (carry after them, per-step trajectory).

    ``episode_length``: the time limit of an episode (``None``: only terminations end one).
    ``deterministic``: a stochastic policy acts with tanh(mean) instead of sampling.
    With ``auto_reset`` every episode that ends during this unroll restarts from one start state drawn
    at the beginning of the unroll (one ``reset`` per unroll instead of one per step), or from
    ``restart_state`` when given (Brax 0.0.x's auto-reset: back to the env's own first state).
    ``record_pipeline_state``: ``True`` records each step's physics state; a function records what it returns
    of it instead (e.g. a flat vector of body states: an MJX state holds far more than a rollout needs).
    ``cut_probe``: a zero scalar whose gradient counts the steps whose backward pass ``finite_cotangent`` cut
    (needs ``gradients.step_clip``, which turns the cut on).
    """
    if cut_probe is not None and not gradients.step_clip:
        raise ValueError("unroll: cut_probe counts the steps finite_cotangent cuts, which needs gradients.step_clip")
    sample = policy.stochastic and not deterministic
    recorded = (
        record_pipeline_state
        if callable(record_pipeline_state)
        else ((lambda x: x) if record_pipeline_state else (lambda x: None))
    )
    key = carry.key
    if restart_state is not None and not auto_reset:
        raise ValueError("unroll: restart_state is where auto_reset restarts an episode; it needs auto_reset=True")
    if restart_state is not None:
        fresh = jax.lax.stop_gradient(restart_state)  # a restart passes no gradient to the episode before it
    elif auto_reset:
        key, reset_key = jax.random.split(key)
        fresh = env.reset(reset_key)
    carry = carry.replace(key=key)

    def step(carry: RolloutCarry, t):
        state, hidden = carry.state, carry.policy_carry
        if gradients.truncation:
            state, hidden = truncate_every((state, hidden), t, gradients.truncation)
        if gradients.step_clip:
            state, hidden = clip_cotangent((state, hidden), gradients.step_clip, gradients.step_clip_axis)
        key, action_key = jax.random.split(carry.key) if sample else (carry.key, None)
        hidden, action = policy.act(params, normalizer, hidden, state.obs, action_key)
        # With per-step clipping (ILD) a step whose backward pass is not finite is cut there (the authors'
        # per-step clip zeroed NaN entries, nan_to_num; here the whole step's cotangent goes to zero).
        step_state, action = finite_cotangent((state, action), cut_probe) if gradients.step_clip else (state, action)
        next_state = env.step(step_state, action)
        # Some tasks return Python floats (Brax's inverted pendulum pays `1.0`): keep the carry's dtypes.
        next_state = next_state.replace(
            reward=jnp.asarray(next_state.reward, state.reward.dtype),
            done=jnp.asarray(next_state.done, state.done.dtype),
        )
        steps = carry.steps + 1
        terminated = jnp.logical_or(next_state.done > 0, diverged(next_state.obs))
        out_of_time = steps >= episode_length if episode_length else jnp.zeros_like(terminated)
        truncated = jnp.logical_and(out_of_time, ~terminated)
        done = jnp.logical_or(terminated, truncated)
        record = Trajectory(
            observation=state.obs,
            action=action,
            # `where`, not a product: the reward (and its gradient) pass bit for bit while alive.
            reward=jnp.where(carry.alive, next_state.reward, 0.0),
            done=done.astype(next_state.reward.dtype),
            truncation=truncated.astype(next_state.reward.dtype),
            next_observation=next_state.obs,
            alive=carry.alive,
            pipeline_state=recorded(next_state.pipeline_state),
        )
        if auto_reset:
            pick = lambda new, old: jnp.where(done, new, old)
            next_state = jax.tree.map(pick, fresh, next_state.replace(done=jnp.zeros_like(next_state.done)))
            hidden = jnp.where(done, policy.initial_carry(), hidden)
            next_carry = RolloutCarry(next_state, hidden, jnp.where(done, 0, steps), carry.alive, key)
        else:
            next_carry = RolloutCarry(next_state, hidden, steps, jnp.logical_and(carry.alive, ~done), key)
        return next_carry, record

    if gradients.checkpoint:
        step = jax.checkpoint(step, prevent_cse=False)
    return jax.lax.scan(step, carry, jnp.arange(length))


def episode(
    env: Env,
    policy: Policy,
    params: Params,
    normalizer: NormalizerState,
    start_state: State,
    length: int,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
    record_pipeline_state: bool | Callable[[Any], Any] = False,
    action_key: jax.Array | None = None,
    cut_probe: jax.Array | None = None,
    restart: bool = False,
) -> Trajectory:
    """One episode of at most ``length`` steps from ``start_state``, masked after it ends: deterministic, or
    sampling a stochastic policy's actions with ``action_key`` (ILD's rollouts, an expert's demos).
    ``restart``: a termination restarts the episode from ``start_state`` and the ``length`` steps run on (ILD's
    authors' auto-reset; ``done`` marks each end, nothing is masked). ``cut_probe``: as in ``unroll``."""
    key = jax.random.PRNGKey(0) if action_key is None else action_key
    _, trajectory = unroll(
        env,
        policy,
        params,
        normalizer,
        start_from(start_state, policy, key),
        length,
        episode_length=length,
        auto_reset=restart,
        deterministic=action_key is None,
        gradients=gradients,
        record_pipeline_state=record_pipeline_state,
        cut_probe=cut_probe,
        restart_state=start_state if restart else None,
    )
    return trajectory


def episode_return(
    env: Env,
    policy: Policy,
    params: Params,
    normalizer: NormalizerState,
    start_state: State,
    length: int,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
) -> jax.Array:
    """Undiscounted return of one deterministic episode (steps after a termination add nothing): the
    quantity every table in diffrl reports, and minus the loss of analytic policy gradients."""
    return jnp.sum(episode(env, policy, params, normalizer, start_state, length, gradients).reward)
