"""The SB3 VecEnv adapter over our JAX envs: SB3's env checker, shapes and dtypes, auto-reset, rewards,
and episodes that end early (terminations, not bootstrapped) vs at the time limit (truncations)."""

import jax
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env  # the dev extra installs SB3: a test, never a skip

from diffrl.baselines.vec_env import JaxVecEnv, SingleEnvView
from diffrl.envs import make_env

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


# --- episodes that end early: Brax's inverted pendulum terminates when the pole leaves +-0.2 rad ---
LIMIT = 40


@pytest.fixture(scope="module")
def pendulum():
    return make_env("inverted_pendulum", "generalized")  # the cheapest terminating task to compile


def test_terminated_episodes_end_early_without_time_limit_flag_and_restart(pendulum):
    vec = JaxVecEnv(pendulum, num_envs=2, episode_length=LIMIT)
    vec.reset()
    push = np.ones((2, pendulum.action_size), np.float32)  # full force to one side: the pole falls
    total, steps = np.zeros(2), 0
    while steps < LIMIT:
        obs, rewards, dones, infos = vec.step(push)
        total, steps = total + rewards, steps + 1
        if dones.any():
            break
    assert dones.all() and steps < LIMIT, "the pole should fall long before the time limit"
    for i in range(2):
        info = infos[i]
        assert info["TimeLimit.truncated"] is False  # a termination: SB3 must not bootstrap through it
        assert info["episode"]["l"] == steps and info["episode"]["r"] == pytest.approx(total[i])
        assert abs(info["terminal_observation"][1]) > 0.2  # the pole angle that ended the episode
    np.testing.assert_allclose(obs, 0.0, atol=0.011)  # a fresh start: upright and at rest (+-0.01 noise)
    _, _, dones, _ = vec.step(np.zeros_like(push))
    assert not dones.any()


def test_time_limit_on_a_terminating_task_is_a_truncation(pendulum):
    vec = JaxVecEnv(pendulum, num_envs=2, episode_length=3)  # too short for the pole to fall
    vec.reset()
    for _ in range(3):
        _, _, dones, infos = vec.step(np.zeros((2, pendulum.action_size), np.float32))
    assert dones.all() and all(info["TimeLimit.truncated"] is True and info["episode"]["l"] == 3 for info in infos)


@pytest.mark.slow  # a debugging view; the batched adapter's termination handling is tested above (fast)
def test_single_env_view_reports_terminated_and_truncated_apart(pendulum):
    view = SingleEnvView(pendulum, episode_length=LIMIT)
    view.reset(seed=0)
    for _ in range(LIMIT):
        _, _, terminated, truncated, _ = view.step(np.ones(pendulum.action_size, np.float32))
        if terminated or truncated:
            break
    assert terminated and not truncated
    view = SingleEnvView(pendulum, episode_length=2)
    view.reset(seed=0)
    outcomes = [view.step(np.zeros(pendulum.action_size, np.float32))[2:4] for _ in range(2)]
    assert outcomes == [(False, False), (False, True)]
