"""Deterministic evaluation: every seed's policy on the same start states, compiled as one program.

It is the training rollout (``diffrl.rollout.unroll``) with the mean action and no auto-reset: an
episode ends at a termination or at ``episode_length`` steps, and steps after the end are masked.
``early_exit`` (``diffrl eval early_exit=true``; tasks without a hook): the episodes run in chunks of steps and
stop once every one of them has ended, so a humanoid that falls after 50 steps does not simulate 950 masked
ones. The per-step computation is the same but the compiled program is another: per-step values agree with the
whole-length evaluation to float32 rounding, and on a chaotic body that can move an episode's end by a step or
more (README, "Evaluation": the humanoid's mean moved by 0.001 and 0.09). Off by default, so every committed
number reproduces exactly.
Task-specific measures come from the env's ``episode_metrics`` hook (the swing-up tasks report
``upright_fraction``); generic code never names a task.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from brax.envs.base import Env

from diffrl.networks.base import NormalizerState, Params, Policy
from diffrl.rollout import episode, start_from, unroll

EARLY_EXIT_CHUNK = 50  # at most this many steps between two checks of whether every episode has ended


def task_metrics_hook(env: Env):
    """The env's ``episode_metrics(pipeline_states, alive) -> dict`` hook, or None (Brax wrappers
    forward attribute look-ups to the env they wrap)."""
    return getattr(env, "episode_metrics", None)


def make_episode_stats(
    env: Env, policy: Policy, episode_length: int, episodes: int, sample_actions: bool = False, early_exit: bool = False
):
    """Returns jitted ``stats(params, normalizer, key) -> {"return", "length", <task metrics>}``, each
    [seeds, episodes]: the undiscounted return, the episode's length in steps (shorter than
    ``episode_length`` when it terminated) and whatever the task's ``episode_metrics`` hook reports.

    ``params`` and ``normalizer`` carry a leading seed axis; all seeds see the same start states.
    ``sample_actions``: a stochastic policy samples its actions (ILD's authors evaluated so) instead of acting
    with its mean; the noise differs per episode and is the same for every seed. ``early_exit``: stop simulating
    once every episode has ended (refused with a task hook, which reads the whole trajectory).
    """
    hook = task_metrics_hook(env)
    if early_exit and hook is not None:
        raise ValueError("early_exit: this task's episode metrics read whole episodes; evaluate it without")

    def one_episode_early_exit(params, normalizer, start_state, action_key) -> dict[str, jax.Array]:
        """As ``one_episode`` without a hook, in chunks of steps until the episode has ended. Under the vmaps a
        chunk runs while any episode of any seed runs; the ended ones keep their record (``while_loop``'s
        batching selects), and each return sums its per-step rewards, the unrun steps' zeros included."""
        chunk = chunk_length(episode_length)
        key = action_key if sample_actions else jax.random.PRNGKey(0)

        def run_chunk(loop):
            i, carry, rewards, alive_steps = loop
            carry, trajectory = unroll(
                env, policy, params, normalizer, carry, chunk, episode_length=episode_length,
                deterministic=not sample_actions,
            )  # fmt: skip
            rewards = jax.lax.dynamic_update_slice(rewards, trajectory.reward, (i * chunk,))
            return i + 1, carry, rewards, alive_steps + jnp.sum(trajectory.alive, dtype=alive_steps.dtype)

        def running(loop):
            i, carry, _, _ = loop
            # carry.alive turns false at the time limit too; the index bound keeps the buffer writes in range
            return jnp.logical_and(i * chunk < episode_length, carry.alive)

        rewards = jnp.zeros(episode_length, start_state.reward.dtype)
        # jnp.int_: the default path's length dtype (int64 under x64), so both paths return the same types
        loop = (jnp.zeros((), jnp.int32), start_from(start_state, policy, key), rewards, jnp.zeros((), jnp.int_))
        _, _, rewards, alive_steps = jax.lax.while_loop(running, run_chunk, loop)
        return {"return": jnp.sum(rewards), "length": alive_steps}

    def one_episode(params: Params, normalizer: NormalizerState, start_state, action_key) -> dict[str, jax.Array]:
        record = hook is not None
        trajectory = episode(
            env,
            policy,
            params,
            normalizer,
            start_state,
            episode_length,
            record_pipeline_state=record,
            action_key=action_key if sample_actions else None,
        )
        out = {"return": jnp.sum(trajectory.reward), "length": jnp.sum(trajectory.alive)}
        if hook is not None:
            out.update(hook(trajectory.pipeline_state, trajectory.alive))
        return out

    @jax.jit
    def stats(params: Params, normalizer: NormalizerState, key: jax.Array) -> dict[str, Any]:
        starts = jax.vmap(env.reset)(jax.random.split(key, episodes))
        action_keys = jax.random.split(jax.random.fold_in(key, 1), episodes)
        run = one_episode_early_exit if early_exit else one_episode
        per_seed = lambda p, n: jax.vmap(lambda s, k: run(p, n, s, k))(starts, action_keys)
        return jax.vmap(per_seed)(params, normalizer)

    return stats


def chunk_length(episode_length: int) -> int:
    """The largest divisor of ``episode_length`` up to ``EARLY_EXIT_CHUNK``: the chunks tile the episode."""
    return max(d for d in range(1, min(EARLY_EXIT_CHUNK, episode_length) + 1) if episode_length % d == 0)


def make_evaluator(env: Env, policy: Policy, episode_length: int, episodes: int):
    """Returns jitted ``evaluate(params, normalizer, key) -> returns [seeds, episodes]``."""
    stats = make_episode_stats(env, policy, episode_length, episodes)
    return jax.jit(lambda params, normalizer, key: stats(params, normalizer, key)["return"])
