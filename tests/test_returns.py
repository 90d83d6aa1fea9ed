"""Window returns for SHAC: TD(λ) targets and the short-horizon actor objective against hand
computations, TD(λ) against the λ-return of its definition, and the actor objective against the authors'
loop (NVlabs/DiffRL ``shac.py``) written out in numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from diffrl.algos.returns import short_horizon_objective, td_lambda_targets

GAMMA, LAM = 0.9, 0.5


def lambda_return_by_definition(rewards, next_values, done, gamma, lam):
    """The λ-return of every step, from its definition: the n-step returns
    G_t^(n) = r_t + γ r_{t+1} + ... + γ^(n-1) r_{t+n-1} + γ^n V_{t+n-1}, for n = 1 .. N, where step t + N - 1 is
    the first end at or after t (an episode's end or the window's last step), mixed with weights
    (1 - λ) λ^(n-1) for n < N and λ^(N-1) for the last (the weights sum to 1)."""
    steps = len(rewards)
    targets = np.zeros_like(rewards)
    for env in np.ndindex(rewards.shape[1:]):
        r, v, d = rewards[(slice(None), *env)], next_values[(slice(None), *env)], done[(slice(None), *env)]
        for t in range(steps):
            last = next(k for k in range(t, steps) if d[k] or k == steps - 1)
            horizon = last - t + 1
            n_step = [
                sum(gamma**k * r[t + k] for k in range(n)) + gamma**n * v[t + n - 1] for n in range(1, horizon + 1)
            ]
            weights = [(1 - lam) * lam ** (n - 1) for n in range(1, horizon)] + [lam ** (horizon - 1)]
            targets[(t, *env)] = np.dot(weights, n_step)
    return targets


def authors_actor_loss(rewards, next_values, done, gamma):
    """The loop of DiffRL's ``compute_actor_loss`` (rewards and values given), as an objective."""
    steps, envs = rewards.shape
    acc, discount, total = np.zeros(envs), np.ones(envs), 0.0
    for i in range(steps):
        acc = acc + discount * rewards[i]
        ends = np.ones(envs, bool) if i == steps - 1 else done[i].astype(bool)
        total += np.sum(acc[ends] + gamma * discount[ends] * next_values[i][ends])
        discount = np.where(done[i].astype(bool), 1.0, discount * gamma)
        acc = np.where(done[i].astype(bool), 0.0, acc)
    return total / (steps * envs)


def test_td_lambda_targets_by_hand_with_a_termination_and_a_time_out():
    # one env, 4 steps: step 1 terminates (its next value is 0), step 3 is the window's end.
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    next_values = jnp.array([10.0, 0.0, 30.0, 40.0])
    done = jnp.array([0.0, 1.0, 0.0, 0.0])
    targets = td_lambda_targets(rewards, next_values, done, GAMMA, LAM)
    g1 = 2.0  # terminated: no bootstrap
    g0 = 1.0 + GAMMA * ((1 - LAM) * 10.0 + LAM * g1)
    g3 = 4.0 + GAMMA * 40.0  # the window's end bootstraps from the critic
    g2 = 3.0 + GAMMA * ((1 - LAM) * 30.0 + LAM * g3)
    np.testing.assert_allclose(targets, [g0, g1, g2, g3], rtol=1e-6)
    # a time-out at step 1 instead: the episode ends there, but the target bootstraps from V(pre-reset obs)
    timed_out = td_lambda_targets(rewards, next_values.at[1].set(20.0), done, GAMMA, LAM)
    np.testing.assert_allclose(timed_out[1], 2.0 + GAMMA * 20.0, rtol=1e-6)


def test_td_lambda_targets_are_the_lambda_return_of_its_definition_on_random_windows():
    """Random windows (24 steps, 3 envs) with terminations (next value 0) and time-outs (next value the
    critic's of the pre-reset observation): the recursion against the weighted sum of n-step returns."""
    key_r, key_v, key_d, key_t = jax.random.split(jax.random.PRNGKey(0), 4)
    shape = (24, 3)
    rewards = np.asarray(jax.random.normal(key_r, shape), np.float64)
    done = np.asarray(jax.random.bernoulli(key_d, 0.2, shape), np.float64)
    time_out = done * np.asarray(jax.random.bernoulli(key_t, 0.5, shape))
    next_values = np.asarray(jax.random.normal(key_v, shape), np.float64) * (1 - done + time_out)
    assert 0 < time_out.sum() < done.sum()  # both kinds of end occur
    expected = lambda_return_by_definition(rewards, next_values, done, 0.99, 0.95)
    ours = td_lambda_targets(jnp.asarray(rewards), jnp.asarray(next_values), jnp.asarray(done), 0.99, 0.95)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    # λ = 0 is the one-step target, λ = 1 the Monte-Carlo return to the end (bootstrapped there)
    one_step = td_lambda_targets(jnp.asarray(rewards), jnp.asarray(next_values), jnp.asarray(done), 0.99, 0.0)
    np.testing.assert_allclose(one_step, rewards + 0.99 * next_values, rtol=1e-5, atol=1e-5)


def test_short_horizon_objective_by_hand_and_against_the_authors_loop():
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    next_values = jnp.array([[0.0], [5.0], [7.0]])
    done = jnp.array([[1.0], [0.0], [0.0]])  # terminated at step 0; a new episode runs to the window's end
    expected = (1.0 + (2.0 + GAMMA * 3.0 + GAMMA**2 * 7.0)) / 3
    np.testing.assert_allclose(short_horizon_objective(rewards, next_values, done, GAMMA), expected, rtol=1e-6)

    key_r, key_v, key_d = jax.random.split(jax.random.PRNGKey(1), 3)
    rewards = np.asarray(jax.random.normal(key_r, (32, 6)))
    next_values = np.asarray(jax.random.normal(key_v, (32, 6)))
    done = np.asarray(jax.random.bernoulli(key_d, 0.1, (32, 6)), float)
    ours = short_horizon_objective(jnp.asarray(rewards), jnp.asarray(next_values), jnp.asarray(done), 0.99)
    np.testing.assert_allclose(ours, authors_actor_loss(rewards, next_values, done, 0.99), rtol=1e-5)


def test_the_objective_is_differentiable_in_the_rewards_and_values():
    rewards, values, done = jnp.ones((4, 2)), jnp.ones((4, 2)), jnp.zeros((4, 2))
    grad_r, grad_v = jax.grad(lambda r, v: short_horizon_objective(r, v, done, GAMMA), argnums=(0, 1))(rewards, values)
    np.testing.assert_allclose(grad_r[:, 0], GAMMA ** jnp.arange(4) / 8, rtol=1e-6)  # discounted, / (T * N)
    np.testing.assert_allclose(grad_v[:, 0], [0, 0, 0, GAMMA**4 / 8], rtol=1e-6)  # only the window's end bootstraps
