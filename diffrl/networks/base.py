"""The one policy interface every algorithm and the runner use, whatever the network inside.

A policy is a flax module ``(carry, normalized obs) -> (carry, output)`` plus what is needed to run it:
parameter init, the initial recurrent carry (an empty array for feed-forward networks), Brax's running
observation normaliser, and ``act``. A deterministic module outputs the action in [-1, 1]; a stochastic
one outputs ``(mean, log_std)`` of a Normal that is squashed by tanh (reparameterised sampling, so
gradients flow through the sampled action).

The normaliser (``brax.training.acme.running_statistics``) is state the algorithm updates outside the
gradient, never a learned parameter.
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


@dataclasses.dataclass(frozen=True)
class Policy:
    """A policy network with everything needed to run it; hashable, so jitted code can close over it."""

    name: str  # the `policy=` choice it was built from
    module: nn.Module
    observation_size: int
    action_size: int
    carry_size: int = 0  # > 0 for recurrent policies
    stochastic: bool = False

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
        """Folds a batch of observations (any leading dims) into the running statistics."""
        return running_statistics.update(state, observations.reshape(-1, self.observation_size))

    def distribution(
        self, params: Params, normalizer: NormalizerState, carry: Carry, obs: jax.Array
    ) -> tuple[Carry, Any]:
        """(next carry, the module's output): the action, or ``(mean, log_std)`` before the tanh."""
        return self.module.apply(params, carry, running_statistics.normalize(obs, normalizer))

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
