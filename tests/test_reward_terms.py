"""benchmarks/reward_terms.py: a return split into its reward terms, and a critic's value against the measured
discounted return, on a toy task whose sums are known in closed form (no physics compile)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.base import State

from benchmarks.reward_terms import (
    EVAL_SEED,
    discounted_to_go,
    make_measure,
    summarise_terms,
    summarise_values,
)
from diffrl.envs.shac_locomotion import ShacAnt


class Walk:
    """x moves by the action each step; reward = x (a "position" term) + 1 (an "alive" term); ends past x = 3."""

    observation_size, action_size = 2, 1

    def reset(self, key):
        obs = jnp.array([jax.random.uniform(key, (), maxval=0.1), 0.0])
        return State(None, obs, jnp.zeros(()), jnp.zeros(()), {}, {})

    def step(self, state, action):
        obs = jnp.array([state.obs[0] + action[0], 1.0])
        reward = sum(self.reward_terms(obs, action).values())
        return state.replace(obs=obs, reward=reward, done=(obs[0] > 3.0).astype(jnp.float32))

    def reward_terms(self, obs, action):
        return {"position": obs[0], "alive": obs[1]}


@dataclasses.dataclass(frozen=True)
class Push:
    """Acts with its parameter: a constant push."""

    stochastic: bool = False

    def initial_carry(self):
        return jnp.zeros(1)

    def act(self, params, normalizer, carry, obs, key=None):
        return carry, jnp.reshape(params, (1,))

    def normalize(self, obs, normalizer):
        return obs


class ConstantCritic:
    gamma = 0.9

    def __call__(self, critic, observed):
        return critic * jnp.ones(observed.shape[0])


def test_discounted_to_go_is_the_backward_recursion():
    rewards = jnp.array([1.0, 2.0, 0.0, 4.0])
    expected = [1 + 0.5 * (2 + 0.5 * (0 + 0.5 * 4)), 2 + 0.5 * (0 + 0.5 * 4), 0 + 0.5 * 4, 4.0]
    np.testing.assert_allclose(discounted_to_go(rewards, 0.5), expected, rtol=1e-6)


def test_the_ant_reward_is_the_sum_of_its_named_terms():
    env = ShacAnt.__new__(ShacAnt)  # the terms read only the observation
    obs = jnp.zeros(37).at[0].set(0.5).at[5].set(2.0).at[27].set(0.9).at[28].set(0.7)
    terms = env.reward_terms(obs, jnp.ones(8))
    np.testing.assert_allclose(
        [terms[k] for k in ("forward_velocity", "up", "heading", "height")], [2.0, 0.09, 0.7, 0.23], rtol=1e-6
    )
    np.testing.assert_allclose(env.reward(obs, jnp.ones(8)), sum(terms.values()), rtol=1e-7)


def test_each_term_is_summed_over_the_episode_until_it_ends_and_the_critic_is_set_against_g():
    env, episodes, push = Walk(), 3, 0.5
    measure = make_measure(env, Push(), 10, episodes, sample=False, value_fn=ConstantCritic(), value_at=[0, 2, 8])
    params = jnp.full((2,), push)  # two "seeds", the same push
    critics = {"critic": jnp.array([5.0, 7.0])}
    stats = jax.device_get(measure(params, jnp.zeros((2, 1)), critics, jax.random.PRNGKey(EVAL_SEED)))
    x0 = np.asarray(jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(EVAL_SEED), episodes)).obs[:, 0])
    # x_t = x0 + 0.5 t passes 3 at t = 6: six steps counted, nothing after
    np.testing.assert_array_equal(stats["length"], 6)
    np.testing.assert_allclose(stats["alive"], 6.0)
    np.testing.assert_allclose(stats["position"][0], 6 * x0 + 0.5 * 21, rtol=1e-6)
    np.testing.assert_allclose(stats["position"] + stats["alive"], stats["return"], rtol=1e-6)
    rewards = x0[:, None] + 0.5 * np.arange(1, 7) + 1.0  # [episodes, 6]
    g0 = (rewards * 0.9 ** np.arange(6)).sum(axis=1)
    np.testing.assert_allclose(stats["return_to_go"][0, :, 0], g0, rtol=1e-6)
    np.testing.assert_array_equal(stats["alive_at"][0], [[True, True, False]] * episodes)  # t = 8: over

    summary = summarise_values({k: np.asarray(v) for k, v in stats.items()}, ["critic"], [0, 2, 8])
    np.testing.assert_allclose(summary["t0"]["bias_critic"]["per_seed"], [5 - g0.mean(), 7 - g0.mean()], rtol=1e-5)
    assert summary["points_alive"] == 2 * episodes * 2  # the step after the end is left out
    terms = summarise_terms({k: np.asarray(v) for k, v in stats.items()}, ["position", "alive"])
    assert terms["terms_sum_minus_return"] < 1e-4 and terms["per_step"]["alive"] == 1.0
