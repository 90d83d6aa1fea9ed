"""Our JAX envs as a stable-baselines3 ``VecEnv``: every env steps in one jitted, batched call.

The batch of Brax states stays on the device; numpy appears only at the boundary (actions in;
observations, rewards, dones out). An episode ends in one of two ways, which SB3 treats differently:

- a **termination**: the env sets ``done`` (Brax's ant, hopper, ... when unhealthy; the inverted
  pendulum when the pole falls). ``TimeLimit.truncated`` is ``False``: SB3 does not bootstrap through it;
- a **time-limit truncation** after ``episode_length`` steps (the only end the swing-up tasks have):
  ``TimeLimit.truncated`` is ``True``, and SB3's PPO and SAC bootstrap from the terminal observation.

Either way the env resets itself inside the same jitted call, reporting the ``terminal_observation``
and a Monitor-style ``episode`` record (its real return and length) so SB3's own ``ep_rew_mean`` and
``ep_len_mean`` work unchanged.

Importing this module imports gymnasium and stable-baselines3 (and so torch): only the SB3 path does.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import Env, State
from flax import struct
from stable_baselines3.common.vec_env.base_vec_env import VecEnv


@struct.dataclass
class BatchState:
    env: State  # [num_envs] Brax states
    t: jax.Array  # [num_envs] steps taken in the current episode
    episode_return: jax.Array  # [num_envs] undiscounted return so far
    key: jax.Array  # for the start states of the next episodes


def _reset_batch(env: Env, num_envs: int, key: jax.Array) -> BatchState:
    key, reset_key = jax.random.split(key)
    states = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    zeros = jnp.zeros(num_envs)
    return BatchState(states, jnp.zeros(num_envs, jnp.int32), zeros, key)


def _step_batch(env: Env, episode_length: int, batch: BatchState, actions: jax.Array):
    """One step of every env; envs whose episode just ended restart from a fresh start state.

    Returns the next batch and ``(obs, reward, done, truncated, terminal_obs, episode_return,
    episode_steps)``: ``done`` = terminated by the env or truncated by the time limit, ``truncated`` only
    the latter (a step that both terminates and hits the limit is a termination).
    """
    stepped = jax.vmap(env.step)(batch.env, actions)
    t = batch.t + 1
    episode_return = batch.episode_return + stepped.reward
    terminated = stepped.done > 0
    truncated = jnp.logical_and(t >= episode_length, ~terminated)
    done = jnp.logical_or(terminated, truncated)
    key, reset_key = jax.random.split(batch.key)
    # Start states only on the steps where some episode ended (a reset costs about one physics step).
    fresh = jax.lax.cond(
        jnp.any(done), lambda: jax.vmap(env.reset)(jax.random.split(reset_key, actions.shape[0])), lambda: stepped
    )
    pick = lambda new, old: jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)
    next_env = jax.tree.map(pick, fresh, stepped)
    next_batch = BatchState(next_env, jnp.where(done, 0, t), jnp.where(done, 0.0, episode_return), key)
    out = (next_env.obs, stepped.reward, done, truncated, stepped.obs, episode_return, t)
    return next_batch, out


class JaxVecEnv(VecEnv):
    """``num_envs`` copies of a diffrl env behind SB3's ``VecEnv`` API (float32 Boxes; actions in [-1, 1])."""

    def __init__(self, env: Env, num_envs: int, episode_length: int = 500, seed: int = 0):
        self.env, self.episode_length = env, int(episode_length)
        observation_space = gym.spaces.Box(-np.inf, np.inf, (env.observation_size,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)
        self.render_mode = None
        super().__init__(num_envs, observation_space, action_space)
        self._default_seed = int(seed)
        self._reset = jax.jit(functools.partial(_reset_batch, env, num_envs))
        self._step = jax.jit(functools.partial(_step_batch, env, self.episode_length))
        self._batch: BatchState | None = None
        self._actions: np.ndarray | None = None
        self._episode_start = time.perf_counter()

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds[0] is not None else self._default_seed
        self._batch = self._reset(jax.random.PRNGKey(seed))
        # A later reset without a new seed continues the key sequence instead of repeating starts.
        self._default_seed = int(jax.random.randint(self._batch.key, (), 0, 2**31 - 1))
        self._reset_seeds()
        self._episode_start = time.perf_counter()
        return np.array(self._batch.env.obs, dtype=np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)

    def step_wait(self):
        if self._batch is None:
            raise RuntimeError("JaxVecEnv.step called before reset")
        self._batch, out = self._step(self._batch, jnp.asarray(self._actions))
        obs, rewards, dones, truncated, terminal_obs, returns, lengths = (
            np.array(x)
            for x in jax.device_get(out)  # writable copies
        )
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            elapsed = round(time.perf_counter() - self._episode_start, 6)
            for i in np.flatnonzero(dones):
                infos[i] = {
                    "terminal_observation": terminal_obs[i].astype(np.float32),
                    "TimeLimit.truncated": bool(truncated[i]),  # False: terminated, no bootstrapping
                    "episode": {"r": float(returns[i]), "l": int(lengths[i]), "t": elapsed},
                }
        return obs.astype(np.float32), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self._batch = None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)


class SingleEnvView(gym.Env):
    """One env of a ``JaxVecEnv`` as a plain ``gymnasium.Env`` (for SB3's ``check_env`` and debugging).

    ``step`` returns ``terminated`` when the env ended the episode and ``truncated`` when the time
    limit did (never both); the observation returned with either is the terminal one, and the next
    ``step`` continues from the auto-reset.
    """

    metadata = {"render_modes": []}

    def __init__(self, env: Env, episode_length: int = 500):
        self.vec = JaxVecEnv(env, 1, episode_length)
        self.observation_space, self.action_space = self.vec.observation_space, self.vec.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.vec.seed(seed)
        return self.vec.reset()[0], {}

    def step(self, action):
        obs, rewards, dones, infos = self.vec.step(np.asarray(action, np.float32)[None])
        info = infos[0]
        truncated = bool(dones[0]) and info["TimeLimit.truncated"]
        terminated = bool(dones[0]) and not truncated
        if dones[0]:
            obs = info["terminal_observation"][None]
        return obs[0], float(rewards[0]), terminated, truncated, info
