"""Analytic policy gradients: Adam on the negative return, backpropagated through the simulator.

``APGCore`` is the one differentiable-rollout optimiser every first-order algorithm shares (PAPG
and CE-APG here; SHAC and ILD reuse its pieces). It works on flat parameter vectors so that
populations of candidates are plain arrays to ``vmap`` over.

Non-finite gradients never reach the parameters: ``optax.apply_if_finite`` skips such an update and
counts it; the runner stops a run whose every APG run has failed too many times in a row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from brax.envs.base import Env
from flax import struct
from jax.flatten_util import ravel_pytree

from diffrl.devices import over_population
from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import NO_GRADIENT_OPTIONS, ROLLOUT_AXIS, GradientOptions, episode

_NEVER_APPLY_NONFINITE = 2**31 - 1  # optax would apply non-finite updates after this many in a row


STEP_CLIP_SCOPES = ("rollout", "batch")


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """How gradients are computed and guarded (``algo.grad`` in the config)."""

    truncation: int | None = None  # stop gradients through the state every k steps (null: full backprop)
    clip_norm: float | None = None  # clip the update's global norm
    clip_value: float | None = None  # clip each gradient entry to [-v, v]
    step_clip: float | None = None  # clip each step's state cotangent to this norm
    # rollout: each rollout's cotangent on its own | batch: the whole batch's at once (ILD's authors: their
    # env was batched, so their clip's norm was over all N rollouts; the algorithm must vmap its rollouts over
    # diffrl.rollout.ROLLOUT_AXIS)
    step_clip_scope: str = "rollout"
    checkpoint: bool = False  # jax.checkpoint each step: memory O(T * state) instead of O(T * activations)
    max_consecutive_nonfinite: int = 20  # stop the run when every APG run has failed this many times in a row

    def __post_init__(self):
        if self.step_clip_scope not in STEP_CLIP_SCOPES:
            choices = ", ".join(STEP_CLIP_SCOPES)
            raise ValueError(f"unknown algo.grad.step_clip_scope {self.step_clip_scope!r}; valid choices: {choices}")

    @property
    def rollout_options(self) -> GradientOptions:
        return GradientOptions(
            truncation=self.truncation,
            step_clip=self.step_clip,
            step_clip_axis=ROLLOUT_AXIS if self.step_clip_scope == "batch" else None,
            checkpoint=self.checkpoint,
        )


@struct.dataclass
class APGTrace:
    """Per-Adam-step diagnostics of one refinement (leading axis: step)."""

    returns: jax.Array  # mean return over the step's start states
    lengths: jax.Array  # mean episode length over them (shorter than the horizon when episodes terminate)
    grad_norm: jax.Array  # before clipping
    clipped_grad_norm: jax.Array
    nonfinite: jax.Array  # 1 where the update was skipped


def nonfinite_streak(opt_state: Any) -> jax.Array:
    """Updates skipped in a row (``optax.apply_if_finite``'s counter)."""
    return opt_state.notfinite_count


@struct.dataclass
class UpdateStats:
    """What a guarded update saw of its gradient."""

    grad_norm: jax.Array  # before clipping
    clipped_grad_norm: jax.Array
    nonfinite: jax.Array  # 1 where the update was skipped


def guarded_update(loss_fn, params, opt_state, optimizer, clip: optax.GradientTransformation):
    """One step of ``optimizer`` on ``loss_fn(params) -> (loss, aux)`` after ``clip``; a step whose loss or
    gradient is not finite is skipped (``optimizer`` is wrapped in ``optax.apply_if_finite``) and counted.
    Returns (params, optimizer state, loss, aux, ``UpdateStats``). Every first-order algorithm steps so."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params, opt_state, stats = guarded_step(grads, loss, params, opt_state, optimizer, clip)
    return params, opt_state, loss, aux, stats


def guarded_step(grads, loss, params, opt_state, optimizer, clip: optax.GradientTransformation):
    """``guarded_update`` from a gradient already taken (ILD takes it together with its cut count);
    returns (params, optimizer state, ``UpdateStats``)."""
    # A non-finite loss can still have a finite gradient (e.g. masked by a `where`): the update is garbage
    # all the same, so it is marked non-finite and skipped.
    grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(loss), g, jnp.nan), grads)
    clipped, _ = clip.update(grads, clip.init(params))
    updates, opt_state = optimizer.update(clipped, opt_state, params)
    all_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(clipped)]))
    stats = UpdateStats(
        grad_norm=optax.global_norm(grads),
        clipped_grad_norm=optax.global_norm(clipped),
        nonfinite=(~all_finite).astype(jnp.int32),
    )
    return optax.apply_updates(params, updates), opt_state, stats


def make_clip(grad: GradientConfig) -> optax.GradientTransformation:
    """``algo.grad``'s clipping: each entry to [-clip_value, clip_value], then the global norm to clip_norm."""
    clips = []
    if grad.clip_value is not None:
        clips.append(optax.clip(grad.clip_value))
    if grad.clip_norm is not None:
        clips.append(optax.clip_by_global_norm(grad.clip_norm))
    return optax.chain(*clips) if clips else optax.identity()


class APGCore:
    """The differentiable-rollout optimiser: loss, optimizer and an ``lax.scan`` of Adam steps."""

    def __init__(self, env: Env, policy: Policy, grad: GradientConfig, starts_per_step: int, episode_length: int):
        self.env, self.policy, self.grad = env, policy, grad
        self.starts_per_step, self.episode_length = starts_per_step, episode_length
        flat, self.unravel = ravel_pytree(policy.init(jax.random.PRNGKey(0)))
        self.num_params = flat.shape[0]
        self.clip = make_clip(grad)

    def flat_init(self, key: jax.Array) -> jax.Array:
        return ravel_pytree(self.policy.init(key))[0]

    def optimizer(self, learning_rate: float | jax.Array) -> optax.GradientTransformation:
        # inject_hyperparams: the learning rate may be a traced value (schedules across iterations).
        adam = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
        return optax.apply_if_finite(adam, max_consecutive_errors=_NEVER_APPLY_NONFINITE)

    def starts(self, key: jax.Array, count: int | None = None):
        """``count`` random start states (default: ``starts_per_step``)."""
        return jax.vmap(self.env.reset)(jax.random.split(key, count or self.starts_per_step))

    def rollouts(self, flat: jax.Array, normalizer: NormalizerState, starts) -> tuple[jax.Array, EpisodeBatch]:
        """Mean return over ``starts`` (differentiable), and the batch of episodes it came from."""
        return episodes_from(
            self.env,
            self.policy,
            self.unravel(flat),
            normalizer,
            starts,
            self.episode_length,
            self.grad.rollout_options,
        )

    def gradient_step(self, flat, opt_state, normalizer, key, learning_rate):
        """One Adam step on -(mean return over fresh start states); skipped if non-finite."""

        def loss(p):
            mean_return, episodes = self.rollouts(p, normalizer, self.starts(key))
            return -mean_return, jax.lax.stop_gradient(jnp.mean(episodes.lengths))

        optimizer = self.optimizer(learning_rate)
        flat, opt_state, neg_return, mean_length, stats = guarded_update(loss, flat, opt_state, optimizer, self.clip)
        trace = APGTrace(returns=-neg_return, lengths=mean_length, **vars(stats))
        return flat, opt_state, trace

    def refine(self, flat, opt_state, normalizer, key, steps: int, learning_rate):
        """``steps`` Adam steps in one scan; returns (params, optimizer state, per-step trace)."""

        def body(carry, step_key):
            flat, opt_state = carry
            flat, opt_state, trace = self.gradient_step(flat, opt_state, normalizer, step_key, learning_rate)
            return (flat, opt_state), trace

        (flat, opt_state), trace = jax.lax.scan(body, (flat, opt_state), jax.random.split(key, steps))
        return flat, opt_state, trace


def recent_score(trace: APGTrace, window: int) -> jax.Array:
    """A run's score: its mean return over the last ``window`` Adam steps (the CE-APG paper's)."""
    return jnp.mean(trace.returns[..., -window:], axis=-1)


def apg_metrics(trace: APGTrace, opt_states: Any, limit: int, starts_per_step: int) -> dict[str, jax.Array]:
    """Diagnostics over a population of runs: trace leaves are [runs, steps]."""
    streaks = nonfinite_streak(opt_states)
    finite_norms = jnp.where(trace.nonfinite > 0, jnp.nan, trace.grad_norm)
    return {
        "grad_norm": jnp.nanmean(finite_norms),
        "clipped_grad_norm": jnp.nanmean(jnp.where(trace.nonfinite > 0, jnp.nan, trace.clipped_grad_norm)),
        "nonfinite_grads": jnp.sum(trace.nonfinite),
        # The run stops when *every* APG run has failed `limit` times in a row (none can progress).
        "nonfinite_stalled": (jnp.min(streaks) >= limit).astype(jnp.int32),
        "nonfinite_streak_min": jnp.min(streaks),
        **training_episode_metrics(trace.returns, trace.lengths, starts_per_step),
    }


PAPG_INITS = ("shared", "independent")
PAPG_NORMALIZER_UPDATES = ("once", "every_iteration", "never")


@dataclasses.dataclass(frozen=True)
class PAPGConfig:
    """The defaults are the CE-APG authors' PAPG (``papg`` in sgillen/apg): every run starts from one default
    initialisation plus N(0, ``init_noise``^2) noise, and the normaliser is updated once, from one rollout of
    that un-noised initialisation, then frozen. ``init: independent`` and ``update_normalizer:
    every_iteration`` are diffrl's stronger variant (more diverse runs, inputs that keep up with the swing)."""

    runs: int = 24  # APG runs in parallel; the best one is the result
    steps_per_iteration: int = 100  # Adam steps per outer iteration (between host syncs)
    learning_rate: float = 5e-4
    starts_per_step: int = 4  # start states averaged in each gradient step
    score_window: int = 5
    zero_init: bool = False  # the shared (or each) initialisation is zero instead of the network's default
    init: str = "shared"  # "shared": one init + N(0, init_noise^2) per run; "independent": one default init per run
    init_noise: float = 0.01
    update_normalizer: str = "once"  # "once" (from the un-noised init, then frozen) | "every_iteration" | "never"
    episode_length: int = 500
    grad: GradientConfig = GradientConfig()

    def __post_init__(self):
        if self.init not in PAPG_INITS:
            raise ValueError(f"papg init must be one of {', '.join(PAPG_INITS)}, got {self.init!r}")
        if self.update_normalizer not in PAPG_NORMALIZER_UPDATES:
            raise ValueError(
                f"papg update_normalizer must be one of {', '.join(PAPG_NORMALIZER_UPDATES)}, "
                f"got {self.update_normalizer!r}"
            )


@struct.dataclass
class PAPGState:
    params: jax.Array  # [runs, num_params]
    opt_state: Any  # [runs] optimizer states
    scores: jax.Array  # [runs] recent mean return of each run
    normalizer: NormalizerState
    key: jax.Array


@struct.dataclass
class EpisodeBatch:
    """What the host may want of a batch of training episodes besides their return."""

    observations: jax.Array  # [episodes, T, obs], repeated past each episode's end (see alive_observations)
    lengths: jax.Array  # [episodes] steps before each episode ended


def episodes_from(
    env: Env,
    policy: Policy,
    params: Params,
    normalizer: NormalizerState,
    starts,
    length: int,
    gradients: GradientOptions = NO_GRADIENT_OPTIONS,
) -> tuple[jax.Array, EpisodeBatch]:
    """One deterministic episode from each of ``starts``: their mean return (differentiable) and the
    batch (observations for the normaliser, lengths). APG and CEM score candidates with it."""
    run = lambda start: episode(env, policy, params, normalizer, start, length, gradients)
    trajectory = jax.vmap(run)(starts)
    returns = jnp.sum(trajectory.reward, axis=-1)
    return jnp.mean(returns), EpisodeBatch(alive_observations(trajectory), jnp.sum(trajectory.alive, axis=-1))


def training_episode_metrics(returns: jax.Array, lengths: jax.Array, episodes_each: int) -> dict[str, jax.Array]:
    """Sums and counts of this iteration's training episodes with a finite return (``returns`` and
    ``lengths``: means over ``episodes_each`` episodes, any shape). The runner divides the sums by the
    counts over a whole chunk, so a chunk in which no episode ended logs nothing instead of 0 / 0."""
    finite = jnp.isfinite(returns)
    count = jnp.sum(finite) * episodes_each
    return {
        "train_episode_return_sum": jnp.sum(jnp.where(finite, returns, 0.0)) * episodes_each,
        "train_episode_return_count": count,
        "train_episode_length_sum": jnp.sum(jnp.where(finite, lengths, 0.0)) * episodes_each,
        "train_episode_length_count": count,
    }


def alive_observations(trajectory) -> jax.Array:
    """The observations of running episodes; those after an episode ended repeat its last one, so a
    normaliser fed with them is not skewed by a terminated body lying on the floor for hundreds of steps."""
    last_alive = jnp.maximum(jnp.sum(trajectory.alive, axis=-1, keepdims=True) - 1, 0)
    index = jnp.minimum(jnp.arange(trajectory.alive.shape[-1]), last_alive)
    return jnp.take_along_axis(trajectory.observation, index[..., None], axis=-2)


def rollout_observations(
    core: APGCore, flat: jax.Array, normalizer: NormalizerState, key: jax.Array, episodes: int | None = None
) -> jax.Array:
    """Observations of ``episodes`` episodes of ``flat`` from random starts (default: ``starts_per_step``; no
    gradient), to update the normaliser."""
    return jax.lax.stop_gradient(core.rollouts(flat, normalizer, core.starts(key, episodes))[1].observations)


class PAPG:
    """Parallel APG: ``runs`` APG optimisations (vmapped, each its own Adam and start states); the best run
    is the policy."""

    name = "papg"
    population_mesh = None  # set by the runner to refine the runs on several devices

    def __init__(self, env: Env, policy: Policy, config: PAPGConfig):
        self.config = config
        self.core = APGCore(env, policy, config.grad, config.starts_per_step, config.episode_length)

    @property
    def env_steps_per_iteration(self) -> int:
        """Per outer iteration; ``update_normalizer: once`` adds one episode at ``init``, not counted here."""
        c = self.config
        normalizer_rollouts = c.starts_per_step if c.update_normalizer == "every_iteration" else 0
        return c.runs * (c.steps_per_iteration * c.starts_per_step + normalizer_rollouts) * c.episode_length

    def init(self, key: jax.Array) -> PAPGState:
        c = self.config
        key, init_key, noise_key, obs_key = jax.random.split(key, 4)
        if c.init == "shared":
            base = self.core.flat_init(init_key)
            base = jnp.zeros_like(base) if c.zero_init else base
            params = base + c.init_noise * jax.random.normal(noise_key, (c.runs, base.shape[0]), base.dtype)
        else:
            params = jax.vmap(self.core.flat_init)(jax.random.split(init_key, c.runs))
            params = jnp.zeros_like(params) if c.zero_init else params
            base = params[0]  # no un-noised common init: `once` observes the first run's
        opt_state = jax.vmap(self.core.optimizer(c.learning_rate).init)(params)
        scores = jnp.full((c.runs,), -jnp.inf)
        normalizer = self.core.policy.init_normalizer()
        if c.update_normalizer == "once":  # the authors': one rollout of the un-noised init, then frozen
            observations = rollout_observations(self.core, base, normalizer, obs_key, episodes=1)
            normalizer = self.core.policy.update_normalizer(normalizer, observations)
        return PAPGState(params, opt_state, scores, normalizer, key)

    def _best(self, state: PAPGState) -> jax.Array:
        return jnp.argmax(jnp.where(jnp.isfinite(state.scores), state.scores, -jnp.inf))

    def policy_params(self, state: PAPGState) -> tuple[Params, NormalizerState]:
        return self.core.unravel(state.params[self._best(state)]), state.normalizer

    def train_step(self, state: PAPGState) -> tuple[PAPGState, dict]:
        c = self.config
        key, obs_key, run_key = jax.random.split(state.key, 3)
        normalizer = state.normalizer
        if c.update_normalizer == "every_iteration":
            observe = lambda flat: rollout_observations(self.core, flat, normalizer, obs_key)
            observations = over_population(observe, self.population_mesh)(state.params)
            normalizer = self.core.policy.update_normalizer(normalizer, observations)
        refine = lambda p, o, k: self.core.refine(p, o, normalizer, k, c.steps_per_iteration, c.learning_rate)
        refine_all = over_population(refine, self.population_mesh)
        params, opt_state, trace = refine_all(state.params, state.opt_state, jax.random.split(run_key, c.runs))
        scores = recent_score(trace, c.score_window)
        new_state = PAPGState(params, opt_state, scores, normalizer, key)
        finite = jnp.where(jnp.isfinite(scores), scores, jnp.nan)
        metrics = {
            "return": scores[self._best(new_state)],
            "return_population_mean": jnp.nanmean(finite),
            "learning_rate": jnp.asarray(c.learning_rate),
            **apg_metrics(trace, opt_state, c.grad.max_consecutive_nonfinite, c.starts_per_step),
        }
        return new_state, metrics
