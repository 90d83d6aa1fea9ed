"""The one policy interface every algorithm and the runner use, whatever the network inside.

A policy is a flax module ``(carry, normalized obs) -> (carry, output)`` plus what is needed to run it:
parameter init, the initial recurrent carry (an empty array for feed-forward networks), Brax's running
observation normaliser, and ``act``. A deterministic module outputs the action in [-1, 1]; a stochastic
one outputs ``(mean, log_std)`` of a Normal that is squashed by tanh (reparameterised sampling, so
gradients flow through the sampled action).

The normaliser (``brax.training.acme.running_statistics``) is state the algorithm updates outside the
gradient, never a learned parameter. ``NormalizerOptions`` (``policy.normalizer.*``) picks its semantics: Brax's
current running statistics by default, or the authors' older ones (a unit-variance prior and a +-5 clip of
the normalised input: Brax 0.0.10's ``normalization.py``, which CE-APG and ILD ran).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics, specs

Params = Any  # a flax variables dict
Carry = jax.Array
NormalizerState = running_statistics.RunningStatisticsState

# Brax 0.0.10's normaliser clipped the *variance* to this range (Brax 0.14 clips the std).
VARIANCE_RANGE = (1e-6, 1e6)


@dataclasses.dataclass(frozen=True)
class NormalizerOptions:
    """How observations are normalised before the network (``policy.normalizer.*``).

    - ``variance_prior``: the variance sum starts at this many unit-variance samples, so
      variance = (prior + sum of squared deviations) / (prior + count). 0 is Brax 0.14's running statistics;
      1 is Brax 0.0.10's ``normalization.py`` (CE-APG's and ILD's authors), which keeps a first batch of one
      rollout from blowing rarely-moving inputs up by orders of magnitude.
    - ``clip``: clip the normalised input to +-clip (Brax 0.0.10: 5). A clipped input also passes no gradient.
    - ``std_epsilon``: std = sqrt(variance + epsilon) (SHAC's authors' RunningMeanStd: 1e-5).
    """

    variance_prior: float = 0.0
    clip: float | None = None
    std_epsilon: float = 0.0

    def __post_init__(self):
        if self.variance_prior < 0 or self.std_epsilon < 0:
            raise ValueError(f"policy.normalizer: variance_prior and std_epsilon must be >= 0, got {self}")
        if self.clip is not None and self.clip <= 0:
            raise ValueError(f"policy.normalizer.clip must be positive or null, got {self.clip}")


def count_as_float(count) -> jax.Array:
    """Brax keeps the sample count as a two-word unsigned integer; its value as a float."""
    if hasattr(count, "hi"):
        return jnp.asarray(count.hi, jnp.float32) * 2.0**32 + jnp.asarray(count.lo, jnp.float32)
    return jnp.asarray(count, jnp.float32)


def finite_rows(batch: jax.Array) -> jax.Array:
    """Which rows of a (n, features) batch are finite everywhere."""
    return jnp.all(jnp.isfinite(batch), axis=-1)


def fold_into_statistics(
    state: NormalizerState, batch: jax.Array, options: NormalizerOptions = NormalizerOptions()
) -> NormalizerState:
    """Folds the finite rows of a (n, features) batch into the running statistics; a row holding a NaN or an
    inf is left out (one diverged env would otherwise poison the statistics, and so every later input, for
    good). A batch with no finite row leaves the state as it was."""
    finite = finite_rows(batch)
    safe = jnp.where(finite[:, None], batch, state.mean)
    updated = running_statistics.update(state, safe, weights=finite.astype(batch.dtype))
    if options.variance_prior or options.std_epsilon:
        prior = options.variance_prior
        count = count_as_float(updated.count).astype(updated.summed_variance.dtype)
        variance = (jnp.maximum(updated.summed_variance, 0.0) + prior) / jnp.maximum(count + prior, 1e-12)
        variance = jnp.where(count + prior > 0, variance, 1.0)
        std = jnp.sqrt(jnp.clip(variance, *VARIANCE_RANGE) + options.std_epsilon)
        updated = updated.replace(std=std.astype(updated.std.dtype))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(jnp.any(finite), n, o), new, old)  # noqa: E731
    return state.replace(
        count=keep(updated.count, state.count),
        mean=keep(updated.mean, state.mean),
        summed_variance=keep(updated.summed_variance, state.summed_variance),
        std=keep(updated.std, state.std),
    )


def normalize_observation(
    obs: jax.Array, state: NormalizerState, options: NormalizerOptions = NormalizerOptions()
) -> jax.Array:
    """(obs - mean) / std, clipped to +-options.clip when set."""
    return running_statistics.normalize(obs, state, max_abs_value=options.clip)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy network with everything needed to run it; hashable, so jitted code can close over it."""

    name: str  # the `policy=` choice it was built from
    module: nn.Module
    observation_size: int
    action_size: int
    carry_size: int = 0  # > 0 for recurrent policies
    stochastic: bool = False
    normalizer: NormalizerOptions = NormalizerOptions()

    def init(self, key: jax.Array) -> Params:
        """Parameters in the default float dtype: flax makes float32 ones even under x64, and a float32
        policy would cap the precision of a float64 run (``hardware.enable_x64=true``)."""
        params = self.module.init(key, self.initial_carry(), jnp.zeros(self.observation_size))
        dtype = jnp.asarray(0.0).dtype
        return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)

    def initial_carry(self) -> Carry:
        # Feed-forward policies carry one unused zero: orbax cannot checkpoint an empty array.
        return jnp.zeros(self.carry_size or 1)

    def init_normalizer(self) -> NormalizerState:
        # The default float dtype: float64 statistics when x64 is on (hardware.enable_x64=true).
        return running_statistics.init_state(specs.Array((self.observation_size,), jnp.asarray(0.0).dtype))

    def update_normalizer(self, state: NormalizerState, observations: jax.Array) -> NormalizerState:
        """Folds a batch of observations (any leading dims) into the running statistics; non-finite
        observations are left out."""
        return fold_into_statistics(state, observations.reshape(-1, self.observation_size), self.normalizer)

    def normalize(self, obs: jax.Array, state: NormalizerState) -> jax.Array:
        """The network's input: the observation normalised (and clipped) as ``self.normalizer`` says."""
        return normalize_observation(obs, state, self.normalizer)

    def distribution(
        self, params: Params, normalizer: NormalizerState, carry: Carry, obs: jax.Array
    ) -> tuple[Carry, Any]:
        """(next carry, the module's output): the action, or ``(mean, log_std)`` before the tanh."""
        return self.module.apply(params, carry, self.normalize(obs, normalizer))

    def act(
        self, params: Params, normalizer: NormalizerState, carry: Carry, obs: jax.Array, key: jax.Array | None = None
    ) -> tuple[Carry, jax.Array]:
        """One step -> (next carry, action in [-1, 1]). A stochastic policy samples (reparameterised) when
        given a key and acts with tanh(mean) without one; a deterministic policy ignores the key."""
        carry, out = self.distribution(params, normalizer, carry, obs)
        if not self.stochastic:
            return carry, out
        mean, log_std = out
        if key is None:
            return carry, jnp.tanh(mean)
        return carry, jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype))
