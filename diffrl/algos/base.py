"""What the runner needs from an algorithm: a pure, jittable ``train_step`` over one seed's state.

The runner vmaps ``init`` and ``train_step`` over seeds, scans ``train_step`` into compiled chunks,
and reads metrics and the policy to evaluate between chunks. Nothing here touches the host.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from diffrl.networks.base import NormalizerState, Params

TrainState = Any  # a pytree (flax.struct dataclass), one seed's worth; the runner adds the seed axis
Metrics = dict[str, jax.Array]


class Algorithm(Protocol):
    name: str

    @property
    def env_steps_per_iteration(self) -> int:
        """Simulated control steps one ``train_step`` costs (one seed), for budgets and steps/s."""

    def init(self, key: jax.Array) -> TrainState: ...

    def train_step(self, state: TrainState) -> tuple[TrainState, Metrics]:
        """One outer iteration. Metrics are scalars; ``return`` is the iteration's training return."""

    def policy_params(self, state: TrainState) -> tuple[Params, NormalizerState]:
        """The parameters and normaliser of the policy this state stands for (evaluated, saved)."""
