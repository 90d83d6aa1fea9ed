"""What the runner needs from an external trainer, and the policy adapter for diffrl's evaluator."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from brax.envs.base import Env


@dataclasses.dataclass(frozen=True)
class Report:
    """One progress report of a training seed (what becomes a row of ``metrics.jsonl``)."""

    step: int  # the trainer's own counter, in units of ``iterations`` (env steps; APG: policy updates)
    env_steps: int
    episode_return: float  # deterministic ``episode_length``-step return of the current policy
    metrics: dict[str, float]  # the agent's own metrics (losses, entropy, ...), flat
    steps_per_second: float | None = None  # training env steps/s since the previous report


ReportFn = Callable[[Report], None]


class ExternalTrainer(Protocol):
    """A training algorithm with its own loop. ``iterations`` is the run's budget in the trainer's units."""

    name: str

    def __init__(self, env: Env, options: dict[str, Any], iterations: int): ...

    def train_seed(self, seed: int, report: ReportFn) -> Any:
        """Trains one seed to the end; returns its trained policy (what ``save`` stores)."""

    def save(self, policy: Any, directory: pathlib.Path) -> None: ...

    def load(self, directory: pathlib.Path) -> Any: ...

    def evaluation_policy(self, policies: list[Any]) -> tuple[Any, Any, Any]:
        """(policy, params [seeds], normalizer [seeds]) for ``diffrl.evaluation.make_episode_stats``."""


@dataclasses.dataclass(frozen=True)
class FeedForwardPolicy:
    """A Brax feed-forward policy behind diffrl's recurrent policy interface.

    ``act(params, normalizer, carry, obs)`` runs Brax's deterministic inference function; the carry
    is a dummy scalar and the normaliser lives inside Brax's ``params`` (so ``normalizer`` is unused).
    With ``stochastic=True`` (``diffrl demos`` rolling out an expert), ``act`` samples Brax's action
    distribution when given a key, as a diffrl stochastic policy does.
    """

    make_policy: Callable  # Brax's make_inference_fn(network): (params, deterministic) -> policy(obs, key)
    name: str = "brax_network"
    stochastic: bool = False  # evaluation is always deterministic

    def initial_carry(self) -> jax.Array:
        return jnp.zeros(())

    def act(
        self, params: Any, normalizer: Any, carry: jax.Array, obs: jax.Array, key: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        sample = self.stochastic and key is not None
        action, _ = self.make_policy(params, deterministic=not sample)(obs, key if sample else jax.random.PRNGKey(0))
        return carry, action


def stack_seeds(trees: list[Any]) -> Any:
    """Per-seed pytrees -> one pytree with a leading seed axis (what the evaluator vmaps over)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)
