"""Brax's own jitted agents (``brax.training.agents.{ppo,sac,apg}``) as diffrl external trainers.

Brax wraps our env for training itself (``VmapWrapper`` + ``EpisodeWrapper(episode_length,
action_repeat=1)`` + ``AutoResetWrapper``) with the task's ``env.episode_length`` (``algorithm_options``
passes it on): an episode ends when the env sets ``done`` (Brax's locomotion tasks terminate when
unhealthy; the swing-up tasks never do) or after ``episode_length`` steps, which Brax marks as a
truncation (``info['truncation']``: PPO's GAE and SAC's critic do not treat it as a termination).
Brax's evaluator runs after each of ``num_evals - 1`` training epochs with the deterministic policy,
and its ``eval/episode_reward`` (the undiscounted return up to the episode's end) is the ``return`` we
log. A trained policy is Brax's ``(normalizer, policy)`` params, saved with orbax; the network is
rebuilt from the run's config, so the run directory alone reloads it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from brax.envs.base import Env
from brax.training import types as brax_types
from brax.training.acme import running_statistics, specs

from diffrl.baselines.common import FeedForwardPolicy, Report, ReportFn, stack_seeds
from diffrl.errors import TrainingDiverged

RETURN_KEY = "eval/episode_reward"


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Brax's metrics dict -> plain floats, minus the return (logged as ``return``)."""
    return {k: float(v) for k, v in metrics.items() if k != RETURN_KEY and jnp.ndim(v) == 0}


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    """YAML lists -> tuples: Brax's network modules are hashable flax dataclasses."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


class BraxAgent:
    """Common plumbing; subclasses name Brax's modules and what ``iterations`` means."""

    name: str
    agent: str  # brax.training.agents.<agent>
    factory: str  # network factory in brax.training.agents.<agent>.networks
    budget_arg = "num_timesteps"  # Brax's train() argument that ``iterations`` sets

    def __init__(self, env: Env, options: dict[str, Any], iterations: int):
        options = dict(options)
        self.env, self.iterations = env, int(iterations)
        self.network_kwargs = _tuples(options.pop("network", None) or {})
        self.options = _tuples(options)  # everything else goes to Brax's train() as is
        self.networks = importlib.import_module(f"brax.training.agents.{self.agent}.networks")

    # --- what iterations and reports mean -------------------------------------------------------
    def units(self, brax_step: int) -> tuple[int, int]:
        """Brax's progress_fn step -> (step in ``iterations`` units, env steps)."""
        return brax_step, brax_step

    def option(self, name: str) -> Any:
        """An option of Brax's ``train()`` as it will run: ours, or Brax's default where we set none."""
        if self.options.get(name) is not None:
            return self.options[name]
        train = importlib.import_module(f"brax.training.agents.{self.agent}.train").train
        return inspect.signature(train).parameters[name].default

    def epochs(self) -> int:
        """Brax's training epochs: one after each evaluation but the last."""
        return max(int(self.option("num_evals")) - 1, 1)

    def trained_iterations(self) -> int:
        """What Brax's loop will run, in ``iterations`` units: it runs ``epochs()`` epochs of whole training
        steps, each epoch rounded up, so it can run more than ``iterations`` (never less)."""
        raise NotImplementedError

    # --- training -------------------------------------------------------------------------------
    def network_factory(self):
        return functools.partial(getattr(self.networks, self.factory), **self.network_kwargs)

    def train_seed(self, seed: int, report: ReportFn) -> Any:
        train = importlib.import_module(f"brax.training.agents.{self.agent}.train").train
        last = {"time": time.perf_counter(), "env_steps": 0}

        def progress_fn(brax_step: int, metrics: dict[str, Any]) -> None:
            step, env_steps = self.units(int(brax_step))
            now = time.perf_counter()
            sps = (env_steps - last["env_steps"]) / (now - last["time"]) if env_steps > last["env_steps"] else None
            last.update(time=now, env_steps=env_steps)
            report(Report(step, env_steps, float(metrics[RETURN_KEY]), _scalars(metrics), sps))

        try:
            _, params, _ = train(
                environment=self.env,
                seed=int(seed),
                progress_fn=progress_fn,
                deterministic_eval=True,  # the logged return is the deterministic one, as for every algo
                network_factory=self.network_factory(),
                **{self.budget_arg: self.iterations},
                **self.options,
            )
        except AssertionError as err:
            # Brax checks that its training state is identical on every device; NaN != NaN, so a
            # diverged (non-finite) state fails that check with a bare AssertionError.
            raise TrainingDiverged(
                f"Brax {self.agent} (seed {seed}): its training state became non-finite (Brax reports it as a "
                "failed device-replication check). Likely cause: exploding returns or gradients, e.g. the "
                "double pendulum's unbounded -x^2 reward once the cart runs away. Switches that help: "
                "algo.reward_scaling=<smaller>, a smaller algo.learning_rate, hardware.enable_x64=true."
            ) from err
        return (params[0], params[1])  # (normalizer, policy): all inference needs (PPO adds the value net)

    # --- the trained policy ---------------------------------------------------------------------
    def network(self):
        normalize = (
            running_statistics.normalize
            if self.options.get("normalize_observations")
            else brax_types.identity_observation_preprocessor
        )
        return self.network_factory()(
            self.env.observation_size, self.env.action_size, preprocess_observations_fn=normalize
        )

    def _like(self) -> tuple[Any, Any]:
        """Structure, shapes and dtypes of a trained policy's params, for restoring them."""
        normalizer = running_statistics.init_state(specs.Array((self.env.observation_size,), jnp.float32))
        return normalizer, self.network().policy_network.init(jax.random.PRNGKey(0))

    def save(self, policy: Any, directory: pathlib.Path) -> None:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(pathlib.Path(directory).absolute() / "policy_params", policy, force=True)

    def load(self, directory: pathlib.Path) -> Any:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._like())
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(pathlib.Path(directory).absolute() / "policy_params", abstract)

    def evaluation_policy(self, policies: list[Any]) -> tuple[Any, Any, Any]:
        policy = FeedForwardPolicy(self.networks.make_inference_fn(self.network()))
        return policy, stack_seeds(policies), jnp.zeros(len(policies))


class BraxPPO(BraxAgent):
    name, agent, factory = "ppo", "ppo", "make_ppo_networks"

    def trained_iterations(self) -> int:
        # brax/training/agents/ppo/train.py: epochs x resets x ceil(steps / (epochs x resets x batch)) x batch
        batch = self.option("batch_size") * self.option("unroll_length") * self.option("num_minibatches")
        batch *= self.option("action_repeat")
        epochs = self.epochs() * max(int(self.option("num_resets_per_eval")), 1)
        return epochs * math.ceil(self.iterations / (epochs * batch)) * batch


class BraxSAC(BraxAgent):
    name, agent, factory = "sac", "sac", "make_sac_networks"

    def trained_iterations(self) -> int:
        # brax/training/agents/sac/train.py: the replay buffer's prefill, then epochs of whole actor steps
        actor_step = self.option("action_repeat") * self.option("num_envs")
        prefill = math.ceil(self.option("min_replay_size") / self.option("num_envs")) * actor_step
        per_epoch = math.ceil((self.iterations - prefill) / (self.epochs() * actor_step))
        return prefill + self.epochs() * per_epoch * actor_step


class BraxAPG(BraxAgent):
    """Brax's APG; ``iterations`` = policy updates, each backpropagating through ``horizon_length`` steps."""

    name, agent, factory = "brax_apg", "apg", "make_apg_networks"
    budget_arg = "policy_updates"

    def units(self, brax_step: int) -> tuple[int, int]:
        # Brax's APG reports the epoch index; it runs round(updates / (num_evals - 1)) updates per epoch.
        updates = brax_step * round(self.iterations / self.epochs())
        env_steps = updates * int(self.option("num_envs")) * int(self.option("horizon_length"))
        return updates, env_steps

    def trained_iterations(self) -> int:
        return self.epochs() * round(self.iterations / self.epochs())
