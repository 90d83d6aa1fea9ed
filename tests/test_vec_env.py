"""The SB3 VecEnv adapter over our JAX envs: SB3's env checker, shapes and dtypes, auto-reset, rewards."""

import jax
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.env_checker import check_env  # noqa: E402

from diffrl.baselines.vec_env import JaxVecEnv, SingleEnvView  # noqa: E402
from diffrl.envs import make_env  # noqa: E402

EPISODE = 5


@pytest.fixture(scope="module")
def env():
    return make_env("cartpole_swingup", "analytic")


def test_single_env_view_passes_sb3_env_checker(env):
    check_env(SingleEnvView(env, episode_length=EPISODE), warn=False, skip_render_check=True)


def test_reset_and_step_shapes_and_dtypes(env):
    vec = JaxVecEnv(env, num_envs=3, episode_length=EPISODE)
    obs = vec.reset()
    assert obs.shape == (3, env.observation_size) and obs.dtype == np.float32
    assert vec.observation_space.contains(obs[0]) and vec.action_space.shape == (env.action_size,)
    obs, rewards, dones, infos = vec.step(np.zeros((3, env.action_size), np.float32))
    assert obs.shape == (3, env.observation_size) and obs.dtype == np.float32
    assert rewards.shape == (3,) and rewards.dtype == np.float32
    assert dones.shape == (3,) and dones.dtype == bool and not dones.any()
    assert infos == [{}, {}, {}]


def test_episodes_end_after_episode_length_steps_and_auto_reset(env):
    vec = JaxVecEnv(env, num_envs=2, episode_length=EPISODE)
    vec.reset()
    rng = np.random.default_rng(0)
    total = np.zeros(2)
    for t in range(EPISODE):
        obs, rewards, dones, infos = vec.step(rng.uniform(-1, 1, (2, env.action_size)).astype(np.float32))
        total += rewards
        assert dones.all() == (t == EPISODE - 1) and dones.any() == dones.all()
    for i in range(2):
        info = infos[i]
        assert info["TimeLimit.truncated"] is True
        assert info["episode"]["l"] == EPISODE and info["episode"]["r"] == pytest.approx(total[i], rel=1e-5)
        assert not np.allclose(info["terminal_observation"], obs[i])
    # The returned observation is a fresh start: the pole hangs down (theta = pi), the cart at rest near 0.
    np.testing.assert_allclose(obs[:, 1], np.pi, atol=0.011)
    np.testing.assert_allclose(obs[:, [0, 2, 3]], 0.0, atol=0.011)
    _, _, dones, _ = vec.step(np.zeros((2, env.action_size), np.float32))
    assert not dones.any()  # the step counter restarted with the episode


def test_same_actions_give_the_same_rewards_as_the_jax_env(env):
    vec = JaxVecEnv(env, num_envs=4, episode_length=50)
    vec.seed(3)
    vec.reset()
    state = vec._batch.env  # the batch of Brax states the adapter started from
    step = jax.jit(jax.vmap(env.step))
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 4, env.action_size)).astype(np.float32)
    for a in actions:
        _, rewards, _, _ = vec.step(a)
        state = step(state, a)
        np.testing.assert_allclose(rewards, np.asarray(state.reward), rtol=1e-6, atol=1e-6)


def test_seeded_resets_repeat_and_unseeded_resets_move_on(env):
    vec = JaxVecEnv(env, num_envs=2, episode_length=EPISODE)
    vec.seed(7)
    first = vec.reset()
    vec.seed(7)
    np.testing.assert_array_equal(vec.reset(), first)
    assert not np.array_equal(vec.reset(), first)
