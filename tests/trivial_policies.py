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
    names = ("zero", "plus_one", "minus_one", "random")

    def act(policy, key):  # one program for all four: the policy is an index
        random = jax.random.uniform(key, (env.action_size,), minval=-1.0, maxval=1.0)
        return jnp.stack([jnp.zeros_like(random), jnp.ones_like(random), -jnp.ones_like(random), random])[policy]

    def episode(policy, key):
        reset_key, action_key = jax.random.split(key)

        def step(carry, key):
            state, alive = carry
            state = env.step(state, act(policy, key))
            reward = jnp.where(alive, state.reward, 0.0)
            return (state, alive & (state.done == 0)), reward

        start = env.reset(reset_key)
        return jnp.sum(jax.lax.scan(step, (start, jnp.ones((), bool)), jax.random.split(action_key, length))[1])

    keys = jax.random.split(jax.random.PRNGKey(0), episodes)
    per_policy = jax.vmap(lambda policy: jnp.mean(jax.vmap(lambda key: episode(policy, key))(keys)))
    returns = jax.jit(per_policy)(jnp.arange(len(names)))
    return {name: float(value) for name, value in zip(names, returns)}


def best_trivial_return(*overrides: str) -> float:
    return max(trivial_returns(*overrides).values())
