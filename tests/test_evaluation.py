"""Evaluation: the balance measure, the evaluator's shapes and determinism, and its early exit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Wrapper

from diffrl.envs import TASKS, make_env
from diffrl.evaluation import chunk_length, make_episode_stats
from diffrl.networks import make_gaussian_mlp_policy, make_gru_policy


@pytest.mark.parametrize(
    "task,q,upright",
    [
        ("acrobot", [0.0, 0.0], True),
        ("acrobot", [jnp.pi, 0.0], False),
        ("acrobot", [2 * jnp.pi + 0.1, -0.05], True),  # angles are wrapped
        ("acrobot", [0.15, 0.1], False),  # link 2 is 0.25 rad off upright in absolute terms
        ("cartpole_swingup", [3.0, 0.1], True),  # the cart's position does not matter
        ("double_pendulum_swingup", [0.0, 0.1, -0.15], True),
        ("double_pendulum_swingup", [0.0, 0.1, 0.15], False),
    ],
)
def test_upright_means_every_link_within_0_2_rad(task, q, upright):
    assert bool(TASKS[task].upright(jnp.asarray(q))) is upright


def test_episode_stats_shapes_and_hanging_policy():
    env = make_env("acrobot", "analytic")
    policy = make_gru_policy(env.observation_size, env.action_size)
    params = jax.tree.map(jnp.zeros_like, policy.init(jax.random.PRNGKey(0)))  # zero torque: hangs still
    stack = lambda tree: jax.tree.map(lambda x: jnp.stack([x, x, x]), tree)
    stats = make_episode_stats(env, policy, episode_length=500, episodes=2)
    out = stats(stack(params), stack(policy.init_normalizer()), jax.random.PRNGKey(1))
    assert out["return"].shape == (3, 2) and out["upright_fraction"].shape == (3, 2)
    # ~65 = 500 * (10 - pi^2) hanging still; the +-0.01 start noise makes it sway a little (measured 69-80).
    assert np.all((out["return"] > 60) & (out["return"] < 90)), out["return"]
    np.testing.assert_array_equal(out["return"][0], out["return"][1])  # every seed sees the same starts
    assert np.all(out["upright_fraction"] == 0)


class CountingSteps(Wrapper):
    """Counts (on the host) every env step simulated, one per episode per step under the vmaps."""

    def __init__(self, env):
        super().__init__(env)
        self.steps = 0

    def step(self, state, action):
        jax.debug.callback(self.count, state.obs[0])
        return self.env.step(state, action)

    def count(self, _):
        self.steps += 1


SMALL_POLICIES = {
    "mlp": lambda obs, act: make_gaussian_mlp_policy(obs, act, hidden_sizes=(8,)),
    "gru": lambda obs, act: make_gru_policy(obs, act, hidden_size=8),
}


@pytest.mark.parametrize(
    "sample_actions,make_policy",
    [(False, "mlp"), (True, "mlp"), (False, "gru")],
)
def test_the_early_exit_stops_once_every_episode_has_ended_with_the_default_evaluations_numbers(
    sample_actions, make_policy
):
    """Falling pendulums (an untrained policy; a recurrent one carries its state across chunks): with
    ``early_exit`` far fewer steps are simulated than the default evaluation's episodes x episode_length, and here
    the returns and lengths are the default's bit for bit (on MJX's chaotic humanoid they agree to float32
    rounding only: README, "Evaluation")."""
    env = CountingSteps(make_env("inverted_pendulum", "generalized"))
    policy = SMALL_POLICIES[make_policy](env.observation_size, env.action_size)
    stack = lambda tree: jax.tree.map(lambda *x: jnp.stack(x), *tree)  # noqa: E731
    params = stack([policy.init(jax.random.PRNGKey(i)) for i in range(2)])
    normalizer = stack([policy.init_normalizer()] * 2)
    length, episodes, key = 200, 6, jax.random.PRNGKey(3)
    evaluate = lambda early_exit: make_episode_stats(  # noqa: E731
        env, policy, length, episodes, sample_actions=sample_actions, early_exit=early_exit
    )(params, normalizer, key)
    early = evaluate(True)
    simulated, env.steps = env.steps, 0
    whole = evaluate(False)
    assert env.steps == 2 * episodes * length  # the default simulates every step
    np.testing.assert_array_equal(early["return"], whole["return"])
    np.testing.assert_array_equal(early["length"], whole["length"])
    last_fall = int(np.max(whole["length"]))
    assert 0 < last_fall < length  # every episode fell before its time limit
    chunk = chunk_length(length)
    assert simulated == 2 * episodes * (-(-last_fall // chunk) * chunk), (simulated, last_fall)  # whole chunks


def test_the_early_exit_returns_the_default_paths_types_under_float64():
    env = make_env("inverted_pendulum", "generalized")
    policy = make_gaussian_mlp_policy(env.observation_size, env.action_size, hidden_sizes=(8,))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: jnp.asarray(x)[None], policy.init(jax.random.PRNGKey(0)))
        normalizer = jax.tree.map(lambda x: jnp.asarray(x)[None], policy.init_normalizer())
        run = lambda early_exit: make_episode_stats(env, policy, 100, 2, early_exit=early_exit)(  # noqa: E731
            params, normalizer, jax.random.PRNGKey(1)
        )
        early, whole = run(True), run(False)
    assert early["length"].dtype == whole["length"].dtype == jnp.int64
    np.testing.assert_array_equal(early["length"], whole["length"])


def test_the_early_exit_chunks_tile_the_episode():
    assert chunk_length(1000) == 50 and chunk_length(128) == 32 and chunk_length(7) == 7 and chunk_length(53) == 1


def test_the_early_exit_is_refused_where_a_task_hook_reads_whole_episodes():
    env = make_env("acrobot", "analytic")  # its upright_fraction reads every step
    with pytest.raises(ValueError, match="read whole episodes"):
        make_episode_stats(env, make_gru_policy(env.observation_size, env.action_size), 500, 2, early_exit=True)
