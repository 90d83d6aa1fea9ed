"""Env wrappers diffrl adds on top of a task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import State, Wrapper


class InjectNaN(Wrapper):
    """Turns the reward into NaN from step ``after`` of an episode on: a controlled failure for
    checking that non-finite gradients are caught, counted and stopped (``env.inject_nan_after``)."""

    def __init__(self, env, after: int):
        super().__init__(env)
        self.after = after

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        return state.replace(info={**state.info, "nan_step": jnp.zeros((), jnp.int32)})

    def step(self, state: State, action: jax.Array) -> State:
        steps = state.info["nan_step"] + 1
        next_state = self.env.step(state, action)
        # reward * NaN (not a NaN constant) so that the gradient is NaN too, as in a real blow-up.
        reward = jnp.where(steps > self.after, next_state.reward * jnp.nan, next_state.reward)
        return next_state.replace(reward=reward, info={**next_state.info, "nan_step": steps})
