"""The rollout core: terminations mask the rest of an episode, time limits truncate, auto-reset starts
fresh episodes (env state, policy carry, step count), and the same function serves evaluation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import Env, State

from diffrl.envs import make_env
from diffrl.evaluation import make_episode_stats
from diffrl.networks import Policy, make_mlp_policy
from diffrl.rollout import episode, episode_return, start, start_from, unroll


class Countdown(Env):
    """Observation: steps taken; reward: 1 + the action; terminates after ``lifetime`` steps.
    Each reset starts the count at a random 0 or 100, so fresh starts are recognisable."""

    def __init__(self, lifetime: int):
        self.lifetime = lifetime

    def reset(self, rng):
        offset = 100.0 * jax.random.bernoulli(rng).astype(jnp.float32)
        zero = jnp.zeros(())
        return State(pipeline_state=jnp.zeros(()), obs=jnp.stack([offset]), reward=zero, done=zero, info={})

    def step(self, state, action):
        age = state.pipeline_state + 1.0
        return state.replace(
            pipeline_state=age,
            obs=state.obs + 1.0,
            reward=1.0 + action[0],
            done=(age >= self.lifetime).astype(jnp.float32),
        )

    @property
    def observation_size(self):
        return 1

    @property
    def action_size(self):
        return 1

    @property
    def backend(self):
        return "test"


class StepCounter(nn.Module):
    """A 'recurrent policy' whose carry counts the steps since its episode began; action 0."""

    @nn.compact
    def __call__(self, carry, obs):
        self.param("unused", nn.initializers.zeros, (1,))
        return carry + 1.0, jnp.zeros(1)


COUNTER = Policy("counter", StepCounter(), observation_size=1, action_size=1, carry_size=1)


def run(env, length, **kwargs):
    params, normalizer = COUNTER.init(jax.random.PRNGKey(0)), COUNTER.init_normalizer()
    carry = start(env, COUNTER, jax.random.PRNGKey(1))
    return jax.jit(lambda c: unroll(env, COUNTER, params, normalizer, c, length, **kwargs))(carry)


def test_a_termination_masks_the_rest_of_the_episode():
    carry, traj = run(Countdown(lifetime=3), 8)
    np.testing.assert_array_equal(traj.reward, [1, 1, 1, 0, 0, 0, 0, 0])  # a rollout past done adds nothing
    np.testing.assert_array_equal(traj.alive, [1, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(traj.done[:3], [0, 0, 1])
    assert not np.any(traj.truncation) and not bool(carry.alive)


def test_the_time_limit_truncates_and_a_termination_at_the_limit_is_not_a_truncation():
    _, traj = run(Countdown(lifetime=100), 6, episode_length=4, auto_reset=True)
    np.testing.assert_array_equal(traj.done, [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(traj.truncation, [0, 0, 0, 1, 0, 0])
    _, traj = run(Countdown(lifetime=4), 6, episode_length=4, auto_reset=True)
    np.testing.assert_array_equal(traj.done, [0, 0, 0, 1, 0, 0])
    assert not np.any(traj.truncation)


def test_auto_reset_starts_fresh_episodes_with_a_fresh_policy_carry():
    carry, traj = run(Countdown(lifetime=3), 7, auto_reset=True)
    np.testing.assert_array_equal(traj.done, [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(traj.reward, np.ones(7))  # every step belongs to some episode
    obs, next_obs = np.asarray(traj.observation[:, 0]), np.asarray(traj.next_observation[:, 0])
    # the observation after the episode's last step is the terminal one (pre-reset): a time-out bootstraps from it
    assert next_obs[2] == obs[2] + 1
    # and the next step starts from a fresh start state (count 0 or 100, never the terminal count)
    assert obs[3] in (0.0, 100.0) and obs[6] in (0.0, 100.0)
    assert float(carry.policy_carry[0]) == 1.0  # one step into the third episode
    assert int(carry.steps) == 1 and bool(carry.alive)


class Diverging(Countdown):
    """Never terminates by itself, and its observation turns NaN at its 3rd step: a body whose state diverged,
    whose NaN height would never satisfy a height test."""

    def step(self, state, action):
        stepped = super().step(state, action)
        return stepped.replace(obs=jnp.where(stepped.pipeline_state >= 3, jnp.nan, stepped.obs), done=jnp.zeros(()))


def test_a_non_finite_observation_ends_the_episode_and_auto_reset_restarts_it():
    carry, traj = run(Diverging(lifetime=100), 7, auto_reset=True)
    np.testing.assert_array_equal(traj.done, [0, 0, 1, 0, 0, 1, 0])  # a termination, not a time-out
    assert not np.any(traj.truncation)
    assert np.isnan(traj.next_observation[2, 0]) and np.all(np.isfinite(traj.observation))  # recorded, then reset
    assert bool(carry.alive) and np.isfinite(carry.state.obs[0])
    carry, traj = run(Diverging(lifetime=100), 5)  # without auto-reset the episode is over: nothing after counts
    np.testing.assert_array_equal(traj.alive, [1, 1, 1, 0, 0])
    assert not bool(carry.alive)


def test_a_restarting_episode_runs_on_from_its_own_start_state_after_each_termination():
    """ILD's authors' auto-reset (``after_termination=restart``): back to the env's own first state, not a new
    reset; every step counts, ``done`` marks each end; the terminal state is recorded before the restart."""
    env = Countdown(lifetime=3)
    params, normalizer = COUNTER.init(jax.random.PRNGKey(0)), COUNTER.init_normalizer()
    first = env.reset(jax.random.PRNGKey(0)).replace(obs=jnp.array([7.0]))
    traj = jax.jit(lambda s: episode(env, COUNTER, params, normalizer, s, 8, restart=True))(first)
    np.testing.assert_array_equal(traj.observation[:, 0], [7, 8, 9, 7, 8, 9, 7, 8])
    np.testing.assert_array_equal(traj.next_observation[:, 0], [8, 9, 10, 8, 9, 10, 8, 9])
    np.testing.assert_array_equal(traj.done, [0, 0, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(traj.reward, np.ones(8))
    assert np.all(traj.alive) and not np.any(traj.truncation)
    masked = jax.jit(lambda s: episode(env, COUNTER, params, normalizer, s, 8))(first)
    np.testing.assert_array_equal(masked.reward, [1, 1, 1, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="restart_state is where auto_reset restarts an episode"):
        unroll(
            env, COUNTER, params, normalizer, start_from(first, COUNTER, jax.random.PRNGKey(1)), 4, restart_state=first
        )


def test_a_continued_unroll_picks_up_where_the_last_one_stopped():
    env = Countdown(lifetime=1000)
    params, normalizer = COUNTER.init(jax.random.PRNGKey(0)), COUNTER.init_normalizer()
    carry = start_from(env.reset(jax.random.PRNGKey(2)), COUNTER, jax.random.PRNGKey(3))
    go = jax.jit(lambda c, n: unroll(env, COUNTER, params, normalizer, c, n, episode_length=1000), static_argnums=1)
    _, whole = go(carry, 6)
    carry, first = go(carry, 4)
    _, second = go(carry, 2)
    np.testing.assert_array_equal(np.concatenate([first.observation, second.observation]), whole.observation)


def test_a_stochastic_policy_samples_only_when_asked():
    env = Countdown(lifetime=1000)
    from diffrl.networks import make_gaussian_mlp_policy

    policy = make_gaussian_mlp_policy(1, 1, hidden_sizes=(8,))
    params, normalizer = policy.init(jax.random.PRNGKey(0)), policy.init_normalizer()
    carry = start(env, policy, jax.random.PRNGKey(1))
    go = lambda deterministic: unroll(env, policy, params, normalizer, carry, 5, deterministic=deterministic)[1]
    greedy, sampled = go(True), go(False)
    mean_action = policy.act(params, normalizer, policy.initial_carry(), greedy.observation[0])[1]
    np.testing.assert_allclose(greedy.action[0], mean_action, rtol=1e-6)
    assert not np.allclose(sampled.action, greedy.action)


@pytest.fixture(scope="module")
def inverted_pendulum():
    env = make_env("inverted_pendulum", "generalized")
    policy = make_mlp_policy(env.observation_size, env.action_size, hidden_sizes=(8,))
    return env, policy


def test_a_real_task_terminates_and_evaluation_reports_the_episode_length(inverted_pendulum):
    env, policy = inverted_pendulum
    # A policy pushing hard one way topples the pole within a few dozen steps (Brax's task then sets done).
    params = jax.tree.map(jnp.zeros_like, policy.init(jax.random.PRNGKey(0)))
    params["params"]["MLP_0"]["Dense_1"]["bias"] = jnp.full((1,), 3.0)
    stack = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[None], tree)
    stats = make_episode_stats(env, policy, episode_length=200, episodes=3)
    out = jax.device_get(stats(stack(params), stack(policy.init_normalizer()), jax.random.PRNGKey(0)))
    assert np.all(out["length"] < 200) and np.all(out["length"] > 0), out["length"]
    # Brax's inverted pendulum pays 1 per step: the return counts the steps of the episode, nothing after.
    np.testing.assert_allclose(out["return"], out["length"])
    ret = jax.jit(lambda s: episode_return(env, policy, params, policy.init_normalizer(), s, 200))
    assert float(ret(env.reset(jax.random.PRNGKey(5)))) < 200


class SingularForward(Countdown):
    """Countdown whose step has a finite forward but a NaN backward while the age is below 2.5 (0 x inf, as
    MJX's one-iteration line search gives at an inactive constraint); reward = the action."""

    def step(self, state, action):
        state = super().step(state, action)
        dead_term = 0.0 * jnp.sqrt(jnp.maximum(state.pipeline_state - 2.5, 0.0))  # d/d age: 0 x inf = NaN
        # The age depends on the action (by 0), so the NaN reaches the policy's parameters.
        return state.replace(pipeline_state=state.pipeline_state + 0.0 * action[0], reward=action[0] + dead_term)


class Linear(nn.Module):
    @nn.compact
    def __call__(self, carry, obs):
        return carry, self.param("w", nn.initializers.ones, (1,)) * obs


def test_per_step_clipping_cuts_a_step_whose_backward_pass_is_not_finite():
    """ILD's per-step clip: a step whose backward is NaN (its forward finite) passes no gradient, the others
    theirs. Reward_t = w * obs_t, obs_t = t; steps 0 and 1 are singular, so d return / d w = 2 + 3 + 4 + 5."""
    from diffrl.rollout import GradientOptions

    env, policy = SingularForward(lifetime=100), Policy("linear", Linear(), observation_size=1, action_size=1)
    zero = jnp.zeros(())
    first = State(pipeline_state=zero, obs=jnp.zeros(1), reward=zero, done=zero, info={})

    def total(params, options):
        carry = start_from(first, policy, jax.random.PRNGKey(0))
        _, traj = unroll(env, policy, params, policy.init_normalizer(), carry, 6, gradients=options)
        return jnp.sum(traj.reward)

    params = policy.init(jax.random.PRNGKey(0))
    plain = jax.jit(jax.grad(total), static_argnums=1)(params, GradientOptions())
    assert not np.isfinite(plain["params"]["w"][0])  # the singular steps poison the plain gradient
    cut = jax.jit(jax.grad(total), static_argnums=1)(params, GradientOptions(step_clip=1e6))
    np.testing.assert_allclose(cut["params"]["w"], [14.0])


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_the_cut_probes_gradient_counts_the_steps_whose_backward_pass_was_cut(checkpoint):
    """Issue 23: cuts are counted, not silent. Steps 0 and 1 of SingularForward are singular, the rest are not:
    the zero probe's gradient is 2 per rollout, summed over a vmapped batch of 3 rollouts whose observations
    start at 0, 1, 2 (and 0 for a clean env)."""
    from diffrl.rollout import GradientOptions

    policy = Policy("linear", Linear(), observation_size=1, action_size=1)
    params, options = policy.init(jax.random.PRNGKey(0)), GradientOptions(step_clip=1e6, checkpoint=checkpoint)
    zero = jnp.zeros(3)
    firsts = State(pipeline_state=zero, obs=jnp.arange(3.0)[:, None], reward=zero, done=zero, info={})

    def cuts(env):
        def total(params, probe, first):
            carry = start_from(first, policy, jax.random.PRNGKey(0))
            _, traj = unroll(
                env, policy, params, policy.init_normalizer(), carry, 6, gradients=options, cut_probe=probe
            )
            return jnp.sum(traj.reward)

        def batch_total(params, probe):
            return jnp.sum(jax.vmap(total, (None, None, 0))(params, probe, firsts))

        grads, count = jax.jit(jax.grad(batch_total, argnums=(0, 1)))(params, jnp.zeros(()))
        return grads, float(count)

    grads, count = cuts(SingularForward(lifetime=100))
    assert count == 6.0
    # Counting leaves the gradient as it was: steps 2..5 pass obs_t = o + t each, (14 + 4 o) summed over o = 0, 1, 2.
    np.testing.assert_allclose(grads["params"]["w"], [54.0])
    assert cuts(Countdown(lifetime=100))[1] == 0.0


def test_a_cut_probe_without_step_clipping_is_refused_in_one_line():
    env, policy = Countdown(lifetime=5), Policy("linear", Linear(), observation_size=1, action_size=1)
    params, carry = policy.init(jax.random.PRNGKey(0)), start(env, policy, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="needs gradients.step_clip"):
        unroll(env, policy, params, policy.init_normalizer(), carry, 3, cut_probe=jnp.zeros(()))


@pytest.mark.parametrize("axis", [None, "rollouts"], ids=["each-rollout", "whole-batch"])
def test_the_per_step_clip_scales_each_rollout_or_the_whole_batch_by_its_norm(axis):
    """ILD's authors clipped their batched state's cotangent: one norm over all rollouts, every rollout scaled
    alike. Cotangents 3, 4, 0 and 12 (norms); max norm 2: each on its own -> 2, 2, 0, 2; together (norm 13)
    -> each times 2/13."""
    from diffrl.rollout import ROLLOUT_AXIS, clip_cotangent

    assert axis is None or axis == ROLLOUT_AXIS
    weights = jnp.array([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0], [12.0, 0.0]])

    def member_loss(x, w):
        return jnp.sum(clip_cotangent(x, 2.0, axis) * w)

    grads = jax.jit(jax.grad(lambda x: jnp.sum(jax.vmap(member_loss, axis_name=ROLLOUT_AXIS)(x, weights))))(
        jnp.ones((4, 2))
    )
    if axis is None:
        expected = weights * jnp.array([2 / 3, 2 / 4, 1.0, 2 / 12])[:, None]
    else:
        expected = weights * 2.0 / 13.0
    np.testing.assert_allclose(grads, expected, rtol=1e-6)


def test_an_unknown_step_clip_scope_lists_the_choices():
    from diffrl.algos.apg import GradientConfig

    with pytest.raises(ValueError, match="step_clip_scope 'episode'; valid choices: rollout, batch"):
        GradientConfig(step_clip=1.0, step_clip_scope="episode")


def test_a_batch_wide_step_clip_is_refused_where_the_rollouts_do_not_share_one():
    """Only ILD vmaps its rollouts over ROLLOUT_AXIS; elsewhere the psum would fail deep in a trace."""
    from diffrl.algos import _with_gradient_config

    batch = {"grad": {"step_clip": 1.0, "step_clip_scope": "batch"}}
    assert _with_gradient_config({"name": "ild", **batch}, batch_clip=True)["grad"].step_clip_scope == "batch"
    with pytest.raises(ValueError, match="algo=shac clips each rollout on its own: use algo.grad.step_clip_scope"):
        _with_gradient_config({"name": "shac", **batch})
