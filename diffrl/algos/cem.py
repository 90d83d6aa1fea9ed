"""Cross-entropy method over policy parameters (gradient-free), with a diagonal Gaussian.

Each iteration samples ``population`` parameter vectors around the mean, scores each by its return,
and moves the mean to the elites' mean; the new std is the elites' root-mean-square distance from the
*old* mean (as in the CE-APG paper's code). CE-APG reuses ``sample_candidates`` and ``cross_entropy_update``.

The defaults are the CE-APG authors' CEM (``cem`` in sgillen/apg): each candidate is scored from its own
random start state, the observation normaliser is never updated (with ``normalizer.clip`` 5: the identity,
clipped to +-5), and the training return reported each iteration is one rollout of the new mean. diffrl's
variant (``start_states: shared``, ``update_normalizer: true``, ``reported_return: best_candidate``) ranks the
candidates on common start states (fairer), lets the normaliser follow the swing, and reports the best
candidate's score: a stronger, noisier-to-read CEM than the paper's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import Env
from flax import struct
from jax.flatten_util import ravel_pytree

from diffrl.algos.apg import EpisodeBatch, episodes_from, training_episode_metrics
from diffrl.devices import over_population
from diffrl.networks.base import NormalizerState, Params, Policy

CEM_START_STATES = ("per_candidate", "shared")
CEM_REPORTED_RETURNS = ("mean_rollout", "best_candidate")


@dataclasses.dataclass(frozen=True)
class CEMConfig:
    population: int = 24
    elites: int = 8
    init_std: float = 0.01
    min_std: float = 0.0
    episodes_per_candidate: int = 1
    start_states: str = "per_candidate"  # each candidate its own starts, or "shared": the same for all
    zero_init: bool = False
    update_normalizer: bool = False  # fold each iteration's observations into the normaliser
    reported_return: str = "mean_rollout"  # `return`: one episode of the new mean, or the best candidate's score
    episode_length: int = 500

    def __post_init__(self):
        if not 0 < self.elites <= self.population:
            raise ValueError(
                f"cem needs 0 < elites <= population, got elites={self.elites}, population={self.population}"
            )
        if self.start_states not in CEM_START_STATES:
            raise ValueError(
                f"cem start_states must be one of {', '.join(CEM_START_STATES)}, got {self.start_states!r}"
            )
        if self.reported_return not in CEM_REPORTED_RETURNS:
            raise ValueError(
                f"cem reported_return must be one of {', '.join(CEM_REPORTED_RETURNS)}, got {self.reported_return!r}"
            )


@struct.dataclass
class CEMState:
    mean: jax.Array  # flat policy parameters
    std: jax.Array  # per-parameter std of the sampling distribution
    normalizer: NormalizerState
    key: jax.Array


def sample_candidates(key: jax.Array, mean: jax.Array, std: jax.Array, population: int) -> jax.Array:
    return mean + std * jax.random.normal(key, (population, mean.shape[0]), mean.dtype)


def cross_entropy_update(
    old_mean: jax.Array, candidates: jax.Array, scores: jax.Array, elites: int, min_std: float = 0.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """New (mean, std) from the top-``elites`` candidates by score; also returns the elite indices.

    Non-finite scores rank last, so a diverged candidate never becomes an elite while any finite
    one exists.
    """
    safe_scores = jnp.where(jnp.isfinite(scores), scores, -jnp.inf)
    _, elite_idx = jax.lax.top_k(safe_scores, elites)
    elite = candidates[elite_idx]
    new_mean = jnp.mean(elite, axis=0)
    new_std = jnp.sqrt(jnp.mean((elite - old_mean) ** 2, axis=0))
    return new_mean, jnp.maximum(new_std, min_std), elite_idx


class CEM:
    name = "cem"
    population_mesh = None  # set by the runner to score the candidates on several devices

    def __init__(self, env: Env, policy: Policy, config: CEMConfig):
        self.env, self.policy, self.config = env, policy, config
        _, self._unravel = ravel_pytree(policy.init(jax.random.PRNGKey(0)))

    @property
    def env_steps_per_iteration(self) -> int:
        c = self.config
        reported = 1 if c.reported_return == "mean_rollout" else 0
        return (c.population * c.episodes_per_candidate + reported) * c.episode_length

    def init(self, key: jax.Array) -> CEMState:
        init_key, key = jax.random.split(key)
        mean, _ = ravel_pytree(self.policy.init(init_key))
        if self.config.zero_init:
            mean = jnp.zeros_like(mean)
        return CEMState(
            mean=mean,
            std=jnp.full_like(mean, self.config.init_std),
            normalizer=self.policy.init_normalizer(),
            key=key,
        )

    def policy_params(self, state: CEMState) -> tuple[Params, NormalizerState]:
        return self._unravel(state.mean), state.normalizer

    def _score(self, flat_params: jax.Array, normalizer: NormalizerState, starts) -> tuple[jax.Array, EpisodeBatch]:
        """Mean return over the start states, and the episodes (observations for the normaliser, lengths)."""
        return episodes_from(
            self.env, self.policy, self._unravel(flat_params), normalizer, starts, self.config.episode_length
        )

    def _starts(self, key: jax.Array):
        return jax.vmap(self.env.reset)(jax.random.split(key, self.config.episodes_per_candidate))

    def train_step(self, state: CEMState) -> tuple[CEMState, dict]:
        c = self.config
        key, sample_key, start_key, report_key = jax.random.split(state.key, 4)
        candidates = sample_candidates(sample_key, state.mean, state.std, c.population)
        # One key per candidate; with shared start states every candidate gets the same one.
        if c.start_states == "per_candidate":
            start_keys = jax.random.split(start_key, c.population)
        else:
            start_keys = jnp.broadcast_to(start_key, (c.population, *start_key.shape))
        score = lambda candidate, k: self._score(candidate, state.normalizer, self._starts(k))
        scores, episodes = over_population(score, self.population_mesh)(candidates, start_keys)
        mean, std, _ = cross_entropy_update(state.mean, candidates, scores, c.elites, c.min_std)
        normalizer = state.normalizer
        if c.update_normalizer:
            normalizer = self.policy.update_normalizer(normalizer, episodes.observations)
        finite = jnp.isfinite(scores)
        best_candidate = jnp.max(jnp.where(finite, scores, -jnp.inf))
        if c.reported_return == "mean_rollout":  # the authors': one episode of the new mean
            reported = self._score(mean, normalizer, jax.vmap(self.env.reset)(report_key[None]))[0]
        else:
            reported = best_candidate
        metrics = {
            "return": reported,
            "return_best_candidate": best_candidate,
            "return_population_mean": jnp.mean(jnp.where(finite, scores, jnp.nan)),
            "std_mean": jnp.mean(std),
            "nonfinite_candidates": jnp.sum(~finite),
            **training_episode_metrics(scores, jnp.mean(episodes.lengths, axis=-1), c.episodes_per_candidate),
        }
        return CEMState(mean=mean, std=std, normalizer=normalizer, key=key), metrics
