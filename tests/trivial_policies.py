"""Returns of trivial policies — zero action, a constant push either way, uniformly random actions — over
whole episodes of a task: what a learning test's trained policy must beat, computed, never hard-coded."""

import jax
import jax.numpy as jnp

from diffrl.experiment import build_env

from conftest import compose_train


def trivial_returns(*overrides: str, episodes: int = 64) -> dict[str, float]:
    """Mean undiscounted return of each trivial policy over ``episodes`` episodes from random resets of the
    task the overrides compose (``env=...``, its backend and episode length); steps after a termination
    add nothing, as in diffrl's evaluation."""
    cfg = compose_train(*overrides)
    env, length = build_env(cfg), int(cfg.env.episode_length)
    constant = lambda value: lambda key: jnp.full((env.action_size,), value)
    policies = {
        "zero": constant(0.0),
        "plus_one": constant(1.0),
        "minus_one": constant(-1.0),
        "random": lambda key: jax.random.uniform(key, (env.action_size,), minval=-1.0, maxval=1.0),
    }

    def episode(act, key):
        reset_key, action_key = jax.random.split(key)

        def step(carry, key):
            state, alive = carry
            state = env.step(state, act(key))
            reward = jnp.where(alive, state.reward, 0.0)
            return (state, alive & (state.done == 0)), reward

        start = env.reset(reset_key)
        return jnp.sum(jax.lax.scan(step, (start, jnp.ones((), bool)), jax.random.split(action_key, length))[1])

    keys = jax.random.split(jax.random.PRNGKey(0), episodes)
    run = lambda act: float(jnp.mean(jax.jit(jax.vmap(lambda k: episode(act, k)))(keys)))
    return {name: run(act) for name, act in policies.items()}


def best_trivial_return(*overrides: str) -> float:
    return max(trivial_returns(*overrides).values())
