"""Brax environments for the swing-up tasks, on any of Brax's physics pipelines, and the task hooks
(episode metrics, replay) that every backend of a swing-up task shares."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax.envs.base import PipelineEnv, State
from brax.io import mjcf

from diffrl.envs.tasks import SwingUpTask

UPRIGHT_TAIL = 100  # steps at the end of an episode over which balancing is measured


class SwingUpHooks:
    """What generic code may ask a swing-up env: its task-specific episode metrics and its replay."""

    task: SwingUpTask
    dt: float

    def episode_metrics(self, pipeline_states, alive: jax.Array) -> dict[str, jax.Array]:
        """``upright_fraction``: the share of the last 100 steps with every link within 0.2 rad of
        upright: does the policy *balance*, or swing through the top? (states and ``alive``: [T, ...])"""
        upright = jax.vmap(self.task.upright)(pipeline_states.q)
        return {"upright_fraction": jnp.mean(upright[-UPRIGHT_TAIL:])}

    def replay(self, pipeline_states):
        """(system, maximal-coordinate states) for ``brax.io.html.render``, from any backend's (q, qd):
        the generalized pipeline's ``init`` on the task's own MJCF (the closed form has no Brax system)."""
        from brax.generalized import pipeline as generalized

        sys = mjcf.loads(self.task.xml)
        frames = jax.jit(jax.vmap(lambda q, qd: generalized.init(sys, q, qd)))(pipeline_states.q, pipeline_states.qd)
        return sys.tree_replace({"opt.timestep": self.dt}), frames


class SwingUpEnv(SwingUpHooks, PipelineEnv):
    """A swing-up task as a Brax ``PipelineEnv``; ``backend`` picks the physics pipeline.

    No termination: an episode is a fixed number of steps, counted by the runner (or by Brax's
    ``EpisodeWrapper`` when a Brax training agent drives the env).
    """

    def __init__(self, task: SwingUpTask, backend: str = "generalized", **kwargs):
        sys = mjcf.loads(task.xml)
        super().__init__(sys=sys, backend=backend, n_frames=task.substeps, **kwargs)
        self.task = task

    def reset(self, rng: jax.Array) -> State:
        pipeline_state = self.pipeline_init(*self.task.start_joints(rng))
        obs = self.task.observe(pipeline_state.q, pipeline_state.qd)
        zero = jnp.zeros(())
        return State(pipeline_state, obs, zero, zero, {})

    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(action, -1.0, 1.0)
        pipeline_state = self.pipeline_step(state.pipeline_state, action)
        q, qd = pipeline_state.q, pipeline_state.qd
        return state.replace(
            pipeline_state=pipeline_state,
            obs=self.task.observe(q, qd),
            reward=self.task.reward(q, qd),
        )

    @property
    def observation_size(self) -> int:
        # Static: Brax's default runs an uncompiled reset just to read a shape (seconds).
        return self.task.observation_size
