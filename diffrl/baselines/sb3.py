"""stable-baselines3's PPO and SAC (PyTorch) on our JAX envs, as diffrl external trainers.

The envs are stepped through ``JaxVecEnv`` (all envs in one jitted call). Progress reports run the
current policy deterministically through diffrl's own evaluator (``diffrl.evaluation``): the JAX env
is compiled as usual and the torch policy is called from inside it with ``jax.pure_callback``, so the
logged and final returns mean exactly what they mean for every other algorithm. A trained policy is
SB3's own ``model.zip`` (``PPO.load`` / ``SAC.load`` read it back).

torch runs single-threaded (``torch_threads``): these networks are tiny and the JAX env shares the CPU.
"""

from __future__ import annotations

import inspect
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from brax.envs.base import Env
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger

from diffrl.baselines.common import Report, ReportFn
from diffrl.baselines.vec_env import JaxVecEnv
from diffrl.evaluation import make_episode_stats

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "silu": torch.nn.SiLU, "elu": torch.nn.ELU}
MODEL_FILE = "model.zip"


class SB3Policy:
    """SB3 models (one per seed) behind diffrl's policy interface, callable from jitted JAX code.

    ``params`` is the seed's index into ``models``; ``act`` calls ``model.predict(deterministic=True)``
    on the host for the whole batch of observations at once (``vmap_method="broadcast_all"``).
    """

    name = "sb3_network"
    stochastic = False  # evaluation is always deterministic

    def __init__(self, models: list[Any], action_size: int):
        self.models, self.action_size = list(models), int(action_size)

    def initial_carry(self) -> jax.Array:
        return jnp.zeros(())

    def act(self, params: jax.Array, normalizer: Any, carry: jax.Array, obs: jax.Array, key=None):
        result = jax.ShapeDtypeStruct(obs.shape[:-1] + (self.action_size,), jnp.float32)
        action = jax.pure_callback(self._predict, result, params, obs, vmap_method="broadcast_all")
        return carry, action

    def _predict(self, index: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch; a non-finite observation gets a NaN action without reaching torch (whose
        distributions reject it): the evaluator keeps stepping an env after its episode ended, masked,
        and a fallen Brax body can blow up there."""
        batch_shape = obs.shape[:-1]
        index = np.broadcast_to(np.asarray(index), batch_shape).reshape(-1)
        flat_obs = np.array(obs, np.float32).reshape(-1, obs.shape[-1])
        finite = np.isfinite(flat_obs).all(axis=-1)
        actions = np.full((flat_obs.shape[0], self.action_size), np.nan, np.float32)
        for i in np.unique(index):
            rows = (index == i) & finite
            if rows.any():
                actions[rows] = self.models[int(i)].predict(flat_obs[rows], deterministic=True)[0]
        return actions.reshape(batch_shape + (self.action_size,))


class _LastValues(KVWriter):
    """An SB3 logger output that keeps the last dumped values (losses, entropy, ...) for our reports."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.values.update({k: float(v) for k, v in key_values.items() if isinstance(v, (int, float, np.number))})


class _ReportCallback(BaseCallback):
    """Reports ``num_evals`` times per seed (the first before training), like Brax's ``num_evals``.

    Reports happen between rollouts (PPO: every ``n_steps`` x envs steps; SAC: every step of all envs).
    """

    def __init__(self, trainer: SB3Agent, report: ReportFn, last_values: _LastValues):
        super().__init__()
        self.trainer, self.report, self.last_values = trainer, report, last_values
        self.every = max(trainer.iterations // max(trainer.num_evals - 1, 1), 1)
        self.next_report = 0
        self._since = (time.perf_counter(), 0)  # (time, env steps) just after the previous report

    def _emit(self) -> None:
        t0 = time.perf_counter()
        steps = self.num_timesteps
        sps = (steps - self._since[1]) / (t0 - self._since[0]) if steps > self._since[1] else None
        metrics = {k: v for k, v in self.last_values.values.items() if not k.startswith("time/")}
        episode_return, episode_length = self.trainer.evaluate_model(self.model)
        metrics["eval/avg_episode_length"] = episode_length  # Brax's agents report the same key
        self.report(Report(steps, steps, episode_return, metrics, sps))
        self._since = (time.perf_counter(), steps)  # evaluation time is not training time
        self.next_report = steps + self.every

    def _on_training_start(self) -> None:
        self._emit()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self.next_report:
            self._emit()

    def _on_training_end(self) -> None:
        if self.num_timesteps > self._since[1]:
            self._emit()


class SB3Agent:
    """Common plumbing for SB3's PPO and SAC; ``iterations`` = total env steps (``total_timesteps``)."""

    name: str
    algo_class: type
    round_option: str  # the option that sets how many steps of every env ``learn`` collects at a time

    def __init__(self, env: Env, options: dict[str, Any], iterations: int):
        options = dict(options)
        self.env, self.iterations = env, int(iterations)
        self.episode_length = int(options.pop("episode_length"))
        self.num_envs = int(options.pop("num_envs"))
        self.num_evals = int(options.pop("num_evals", 10))
        self.num_eval_envs = int(options.pop("num_eval_envs", 16))
        self.torch_threads = int(options.pop("torch_threads", 1))
        self.policy_kwargs = self._policy_kwargs(options.pop("policy_kwargs", None) or {})
        self.kwargs = options  # the rest goes to PPO(...) / SAC(...) as is
        # One compiled evaluator for all reports: its policy's model is swapped in, not retraced.
        self._eval_policy = SB3Policy([], env.action_size)
        self._evaluate = make_episode_stats(env, self._eval_policy, self.episode_length, self.num_eval_envs)
        self._eval_key = jax.random.PRNGKey(0)

    def trained_iterations(self) -> int:
        """Env steps ``learn`` will take: it collects whole rounds of all envs until it has ``iterations``
        (a round: ``round_option``'s steps per env: PPO's ``n_steps``, SAC's ``train_freq``)."""
        steps = self.kwargs.get(self.round_option)
        if steps is None:
            steps = inspect.signature(self.algo_class).parameters[self.round_option].default
        rollout = self.num_envs * int(steps)
        return math.ceil(self.iterations / rollout) * rollout

    @staticmethod
    def _policy_kwargs(options: dict[str, Any]) -> dict[str, Any]:
        if "activation_fn" in options:
            options = {**options, "activation_fn": ACTIVATIONS[options["activation_fn"]]}
        return options

    def train_seed(self, seed: int, report: ReportFn) -> Any:
        torch.set_num_threads(self.torch_threads)
        vec_env = JaxVecEnv(self.env, self.num_envs, self.episode_length, seed)
        model = self.algo_class(
            "MlpPolicy",
            vec_env,
            seed=seed,
            device="cpu",
            verbose=0,
            policy_kwargs=self.policy_kwargs,
            **self.kwargs,
        )
        last_values = _LastValues()
        model.set_logger(Logger(folder=None, output_formats=[last_values]))
        self._eval_key = jax.random.PRNGKey(seed)
        model.learn(total_timesteps=self.iterations, callback=_ReportCallback(self, report, last_values))
        return model

    def evaluate_model(self, model: Any) -> tuple[float, float]:
        """Mean deterministic return and episode length of one model over ``num_eval_envs`` start states
        (an episode ends at a termination or after ``episode_length`` steps)."""
        self._eval_policy.models = [model]
        stats = jax.device_get(self._evaluate(jnp.zeros(1, jnp.int32), jnp.zeros(1), self._eval_key))
        return float(np.mean(stats["return"])), float(np.mean(stats["length"]))

    def save(self, policy: Any, directory: pathlib.Path) -> None:
        policy.save(pathlib.Path(directory) / MODEL_FILE)

    def load(self, directory: pathlib.Path) -> Any:
        return self.algo_class.load(pathlib.Path(directory) / MODEL_FILE, device="cpu")

    def evaluation_policy(self, policies: list[Any]) -> tuple[Any, Any, Any]:
        n = len(policies)
        return SB3Policy(policies, self.env.action_size), jnp.arange(n, dtype=jnp.int32), jnp.zeros(n)


class SB3PPO(SB3Agent):
    name, algo_class, round_option = "sb3_ppo", PPO, "n_steps"


class SB3SAC(SB3Agent):
    name, algo_class, round_option = "sb3_sac", SAC, "train_freq"
