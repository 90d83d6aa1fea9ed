"""The deterministic recurrent policy of the CE-APG paper.

obs -> running normaliser -> Dense(H)+ReLU -> GRU cell (hidden = obs size, carry starts at 0)
    -> Dense(H)+ReLU -> Dense(H)+ReLU -> Dense(act)+tanh,   H = 2**ceil(log2(4 * obs size)).

Its layers are flax's ``Dense`` and ``GRUCell`` computed as fused small matmuls (``diffrl/networks/small.py``):
the same parameters, ~3x faster when a population of candidates runs it on CPU.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.networks.base import Policy
from diffrl.networks.small import Dense, GRUCell


def paper_hidden_size(observation_size: int) -> int:
    """The smallest power of two >= 4x the observation size (16 for 4 obs, 32 for 8)."""
    return 2 ** math.ceil(math.log2(4 * observation_size))


class GRUPolicy(nn.Module):
    action_size: int
    hidden_size: int

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(Dense(self.hidden_size)(obs))
        carry, x = GRUCell(features=carry.shape[-1])(carry, x)
        x = nn.relu(Dense(self.hidden_size)(x))
        x = nn.relu(Dense(self.hidden_size)(x))
        return carry, jnp.tanh(Dense(self.action_size)(x))


def make_gru_policy(observation_size: int, action_size: int, hidden_size: int | None = None) -> Policy:
    hidden = hidden_size or paper_hidden_size(observation_size)
    return Policy(
        name="gru",
        module=GRUPolicy(action_size=action_size, hidden_size=hidden),
        observation_size=observation_size,
        action_size=action_size,
        carry_size=observation_size,
    )
