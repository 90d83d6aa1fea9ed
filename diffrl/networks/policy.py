"""The deterministic recurrent policy of the CE-APG paper.

obs -> running normaliser -> Dense(H)+ReLU -> GRU cell (hidden = obs size, carry starts at 0)
    -> Dense(H)+ReLU -> Dense(H)+ReLU -> Dense(act)+tanh,   H = 2**ceil(log2(4 * obs size)).

The normaliser is Brax's running mean/std (``brax.training.acme.running_statistics``); it is state
that the algorithm updates outside the gradient, never a learned parameter.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics, specs

Params = dict
NormalizerState = running_statistics.RunningStatisticsState


def paper_hidden_size(observation_size: int) -> int:
    """The smallest power of two >= 4x the observation size (16 for 4 obs, 32 for 8)."""
    return 2 ** math.ceil(math.log2(4 * observation_size))


class GRUPolicy(nn.Module):
    action_size: int
    hidden_size: int

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(nn.Dense(self.hidden_size)(obs))
        carry, x = nn.GRUCell(features=carry.shape[-1])(carry, x)
        x = nn.relu(nn.Dense(self.hidden_size)(x))
        x = nn.relu(nn.Dense(self.hidden_size)(x))
        return carry, jnp.tanh(nn.Dense(self.action_size)(x))


@dataclasses.dataclass(frozen=True)
class RecurrentPolicy:
    """A recurrent policy with everything needed to run it: init, normaliser and step functions."""

    module: nn.Module
    observation_size: int
    action_size: int
    carry_size: int

    def init(self, key: jax.Array) -> Params:
        return self.module.init(key, self.initial_carry(), jnp.zeros(self.observation_size))

    def initial_carry(self) -> jax.Array:
        return jnp.zeros(self.carry_size)

    def init_normalizer(self) -> NormalizerState:
        # The default float dtype: float64 statistics when x64 is on (hardware.enable_x64=true).
        return running_statistics.init_state(specs.Array((self.observation_size,), jnp.asarray(0.0).dtype))

    def update_normalizer(self, state: NormalizerState, observations: jax.Array) -> NormalizerState:
        """Folds a batch of observations (any leading dims) into the running statistics."""
        return running_statistics.update(state, observations.reshape(-1, self.observation_size))

    def act(
        self, params: Params, normalizer: NormalizerState, carry: jax.Array, obs: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One deterministic step: (params, normaliser, carry, obs) -> (next carry, action in [-1, 1])."""
        normalized = running_statistics.normalize(obs, normalizer)
        return self.module.apply(params, carry, normalized)


def make_recurrent_policy(observation_size: int, action_size: int, hidden_size: int | None = None) -> RecurrentPolicy:
    hidden = hidden_size or paper_hidden_size(observation_size)
    return RecurrentPolicy(
        module=GRUPolicy(action_size=action_size, hidden_size=hidden),
        observation_size=observation_size,
        action_size=action_size,
        carry_size=observation_size,
    )
