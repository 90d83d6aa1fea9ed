"""Brax's built-in tasks (ant, hopper, humanoid, ...) behind the hooks diffrl's generic code asks for."""

from __future__ import annotations

import jax
from brax.envs.base import Env, Wrapper


def replay_as_is(env: Env, pipeline_states):
    """(system, pipeline states) for ``brax.io.html.render`` of a Brax ``PipelineEnv``, whose states
    render as they are: its system with the control step as the frame time."""
    return env.sys.tree_replace({"opt.timestep": env.dt}), pipeline_states


class BraxSuiteEnv(Wrapper):
    """A Brax task as it is, plus a cheap ``observation_size`` and the replay hook.

    Brax's own ``observation_size`` runs an uncompiled ``reset`` to read a shape (8-30 s for these
    tasks on a CPU); ``jax.eval_shape`` traces it without running it (~1 s).
    """

    def __init__(self, env: Env):
        super().__init__(env)
        self._observation_size = int(jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs.shape[-1])

    @property
    def observation_size(self) -> int:
        return self._observation_size

    def replay(self, pipeline_states):
        return replay_as_is(self.env, pipeline_states)
