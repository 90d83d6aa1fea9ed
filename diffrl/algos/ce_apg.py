"""CE-APG: a cross-entropy method over policy parameters whose every candidate is refined by APG.

Per outer iteration (Gillen & Byl; the authors' ``cem_apg``):
1. update the observation normaliser from ``normalizer_rollouts`` rollouts (the authors': one) of the current
   mean, then freeze it inside APG;
2. sample ``population`` candidates around the mean with the diagonal std;
3. refine each with ``apg_steps`` Adam steps on -(mean return over ``starts_per_step`` random starts),
   learning rate log-linear from ``lr_start`` (first iteration) to ``lr_end`` (the last of
   ``schedule_iterations``, each budget's own count; held after it);
4. score = mean return over the last ``score_window`` APG steps; new mean = mean of the elites'
   *refined* parameters; new std = RMS distance of the elites from the *old* mean.

The paper reports the best candidate's score as CE-APG's training return; by default the policy a
run delivers (evaluated, saved) is that best refined candidate (``deploy: best``), since the mean
of several distinct elites can be a poor policy itself; ``deploy: mean`` delivers the CEM mean.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from brax.envs.base import Env
from flax import struct

from diffrl.algos.apg import APGCore, GradientConfig, apg_metrics, recent_score, rollout_observations
from diffrl.algos.cem import cross_entropy_update, sample_candidates
from diffrl.devices import over_population
from diffrl.networks.base import NormalizerState, Params, Policy


@dataclasses.dataclass(frozen=True)
class CEAPGConfig:
    population: int = 24
    elites: int = 8
    init_std: float = 0.05
    min_std: float = 0.0
    apg_steps: int = 100
    starts_per_step: int = 4
    score_window: int = 5
    lr_start: float = 1e-3
    lr_end: float = 1e-6
    zero_init: bool = True  # the paper starts the mean at zero (the quick budget does not)
    deploy: str = "best"  # the policy a run delivers: "best" refined candidate of the last iteration, or "mean"
    update_normalizer: bool = True
    normalizer_rollouts: int = 1  # episodes of the mean folded into the normaliser each iteration (the authors': 1)
    iterations: int = 200  # the run's length (set by the runner); the schedule's when schedule_iterations is None
    schedule_iterations: int | None = None  # the learning-rate schedule's length (None: the run's iterations)
    episode_length: int = 500
    grad: GradientConfig = GradientConfig()

    def __post_init__(self):
        if not 0 < self.elites <= self.population:
            raise ValueError(f"ce_apg needs 0 < elites <= population, got {self.elites} and {self.population}")
        if self.deploy not in ("best", "mean"):
            raise ValueError(f"ce_apg deploy must be 'best' or 'mean', got {self.deploy!r}")
        if not 0 < self.score_window <= self.apg_steps:
            raise ValueError(f"ce_apg needs 0 < score_window <= apg_steps, got {self.score_window}, {self.apg_steps}")
        if self.normalizer_rollouts < 1:
            raise ValueError(f"ce_apg needs normalizer_rollouts >= 1, got {self.normalizer_rollouts}")


@struct.dataclass
class CEAPGState:
    mean: jax.Array
    std: jax.Array
    best: jax.Array  # the best refined candidate of the last iteration (its score: the training return)
    normalizer: NormalizerState
    key: jax.Array
    iteration: jax.Array


def log_linear_learning_rate(iteration: jax.Array, iterations: int, start: float, end: float) -> jax.Array:
    """start at iteration 0, end at the last iteration (``iterations - 1``) and after it, geometric in between."""
    frac = jnp.where(iterations > 1, jnp.minimum(iteration / jnp.maximum(iterations - 1, 1), 1.0), 0.0)
    return jnp.exp(jnp.log(start) * (1.0 - frac) + jnp.log(end) * frac)


class CEAPG:
    name = "ce_apg"
    population_mesh = None  # set by the runner to refine the candidates on several devices

    def __init__(self, env: Env, policy: Policy, config: CEAPGConfig):
        self.config = config
        self.core = APGCore(env, policy, config.grad, config.starts_per_step, config.episode_length)

    @property
    def env_steps_per_iteration(self) -> int:
        c = self.config
        normalizer_rollouts = c.normalizer_rollouts if c.update_normalizer else 0
        return (c.population * c.apg_steps * c.starts_per_step + normalizer_rollouts) * c.episode_length

    def init(self, key: jax.Array) -> CEAPGState:
        key, init_key = jax.random.split(key)
        mean = self.core.flat_init(init_key)
        if self.config.zero_init:
            mean = jnp.zeros_like(mean)
        std = jnp.full_like(mean, self.config.init_std)
        return CEAPGState(mean, std, mean, self.core.policy.init_normalizer(), key, jnp.zeros((), jnp.int32))

    def policy_params(self, state: CEAPGState) -> tuple[Params, NormalizerState]:
        deployed = state.best if self.config.deploy == "best" else state.mean
        return self.core.unravel(deployed), state.normalizer

    def train_step(self, state: CEAPGState) -> tuple[CEAPGState, dict]:
        c = self.config
        key, obs_key, sample_key, refine_key = jax.random.split(state.key, 4)
        normalizer = state.normalizer
        if c.update_normalizer:
            observations = rollout_observations(self.core, state.mean, normalizer, obs_key, c.normalizer_rollouts)
            normalizer = self.core.policy.update_normalizer(normalizer, observations)

        lr = log_linear_learning_rate(state.iteration, c.schedule_iterations or c.iterations, c.lr_start, c.lr_end)
        candidates = sample_candidates(sample_key, state.mean, state.std, c.population)

        def refine(flat, k):
            opt_state = self.core.optimizer(lr).init(flat)  # each candidate starts a fresh Adam
            flat, opt_state, trace = self.core.refine(flat, opt_state, normalizer, k, c.apg_steps, lr)
            return flat, opt_state, trace

        refine_all = over_population(refine, self.population_mesh)
        refined, opt_states, trace = refine_all(candidates, jax.random.split(refine_key, c.population))
        scores = recent_score(trace, c.score_window)
        mean, std, elite_idx = cross_entropy_update(state.mean, refined, scores, c.elites, c.min_std)
        best = refined[elite_idx[0]]  # top_k sorts, so the first elite is the best candidate
        finite = jnp.isfinite(scores)
        metrics = {
            "return": jnp.max(jnp.where(finite, scores, -jnp.inf)),
            "return_population_mean": jnp.nanmean(jnp.where(finite, scores, jnp.nan)),
            "return_before_apg": jnp.nanmean(
                jnp.where(jnp.isfinite(trace.returns[:, 0]), trace.returns[:, 0], jnp.nan)
            ),
            "std_mean": jnp.mean(std),
            "learning_rate": lr,
            "nonfinite_candidates": jnp.sum(~finite),
            **apg_metrics(trace, opt_states, c.grad.max_consecutive_nonfinite, c.starts_per_step),
        }
        return CEAPGState(mean, std, best, normalizer, key, state.iteration + 1), metrics
