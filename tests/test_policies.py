"""Policies behind one interface (gru, mlp, gaussian_mlp) and the value network."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from diffrl.envs import make_env
from diffrl.networks import POLICIES, STOCHASTIC_POLICIES, make_gru_policy, make_policy, make_value_network
from diffrl.networks.gru import paper_hidden_size
from diffrl.rollout import episode_return

from conftest import compose_train

OBS, ACT = 5, 3


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_config_builds_a_policy_that_acts_in_bounds(name):
    options = dict(compose_train(f"policy={name}").policy)
    policy = make_policy(options, OBS, ACT)
    params, normalizer = policy.init(jax.random.PRNGKey(0)), policy.init_normalizer()
    obs = 10.0 * jax.random.normal(jax.random.PRNGKey(1), (OBS,))
    carry, action = policy.act(params, normalizer, policy.initial_carry(), obs, jax.random.PRNGKey(2))
    assert action.shape == (ACT,)
    if policy.stochastic:  # (mean, log-std): the action is the tanh of a reparameterised sample
        mean, log_std = policy.distribution(params, normalizer, policy.initial_carry(), obs)[1]
        sample = mean + jnp.exp(log_std) * jax.random.normal(jax.random.PRNGKey(2), (ACT,))
        np.testing.assert_allclose(action, jnp.tanh(sample), rtol=1e-5, atol=1e-6)
    # weights 10x larger drive the output far past +-1: the squashing keeps the action in bounds (saturated)
    large = jax.tree.map(lambda x: 10.0 * x, params)
    saturated = policy.act(large, normalizer, policy.initial_carry(), obs, jax.random.PRNGKey(2))[1]
    assert bool(jnp.all(jnp.abs(saturated) <= 1.0)) and float(jnp.max(jnp.abs(saturated))) > 0.99, saturated
    assert carry.shape == policy.initial_carry().shape
    assert policy.name == name and policy.stochastic == (name in STOCHASTIC_POLICIES)


def test_gru_policy_is_the_papers_shape():
    policy = make_gru_policy(4, 1)
    params = policy.init(jax.random.PRNGKey(0))["params"]
    assert paper_hidden_size(4) == 16 and paper_hidden_size(8) == 32
    assert params["Dense_0"]["kernel"].shape == (4, 16) and policy.carry_size == 4
    assert params["Dense_3"]["kernel"].shape == (16, 1)


class FlaxGRUPolicy(nn.Module):
    """The GRU policy as it was written on flax's own layers (before diffrl/networks/small.py)."""

    action_size: int
    hidden_size: int

    @nn.compact
    def __call__(self, carry, obs):
        x = nn.relu(nn.Dense(self.hidden_size)(obs))
        carry, x = nn.GRUCell(features=carry.shape[-1])(carry, x)
        x = nn.relu(nn.Dense(self.hidden_size)(x))
        x = nn.relu(nn.Dense(self.hidden_size)(x))
        return carry, jnp.tanh(nn.Dense(self.action_size)(x))


def test_fused_gru_policy_is_flaxs_gru_policy_up_to_round_off():
    """Same parameters from the same key; the same return of a 200-step acrobot episode, and the same
    gradient of it, up to float round-off (the fused matmuls only sum in another order)."""
    env = make_env("acrobot", "analytic")
    fused = make_gru_policy(env.observation_size, env.action_size)
    reference = dataclasses.replace(
        fused, module=FlaxGRUPolicy(fused.action_size, paper_hidden_size(env.observation_size))
    )
    params = fused.init(jax.random.PRNGKey(3))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params, reference.init(jax.random.PRNGKey(3))))
    flat, unravel = ravel_pytree(params)
    start = env.reset(jax.random.PRNGKey(4))
    normalizer = fused.init_normalizer()

    def value_and_grad(policy):
        fn = lambda p: episode_return(env, policy, unravel(p), normalizer, start, 200)
        return jax.jit(jax.value_and_grad(fn))(flat)

    (value, grad), (ref_value, ref_grad) = value_and_grad(fused), value_and_grad(reference)
    assert abs(float(ref_value)) > 1.0 and float(jnp.linalg.norm(ref_grad)) > 1e-3
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(ref_grad))))


def test_mlp_widths_activation_and_layer_norm_are_configurable():
    policy = make_policy({"name": "mlp", "hidden_sizes": [7, 9], "activation": "relu", "layer_norm": True}, OBS, ACT)
    params = policy.init(jax.random.PRNGKey(0))["params"]["MLP_0"]
    assert params["Dense_0"]["kernel"].shape == (OBS, 7) and params["Dense_2"]["kernel"].shape == (9, ACT)
    assert "LayerNorm_0" in params and policy.carry_size == 0
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        make_policy({"name": "mlp", "activation": "nope"}, OBS, ACT).init(jax.random.PRNGKey(0))


def test_gaussian_policy_samples_around_tanh_of_its_mean_and_gradients_flow_through_the_sample():
    policy = make_policy({"name": "gaussian_mlp", "hidden_sizes": [16]}, OBS, ACT)
    params, normalizer = policy.init(jax.random.PRNGKey(0)), policy.init_normalizer()
    np.testing.assert_allclose(params["params"]["log_std"], -1.0)  # SHAC's initial log-std
    obs = jnp.ones(OBS)
    _, (mean, log_std) = policy.distribution(params, normalizer, policy.initial_carry(), obs)
    _, greedy = policy.act(params, normalizer, policy.initial_carry(), obs)  # no key: the mean action
    np.testing.assert_allclose(greedy, jnp.tanh(mean), rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    samples = jax.vmap(lambda k: policy.act(params, normalizer, policy.initial_carry(), obs, k)[1])(keys)
    pre_tanh = jnp.arctanh(jnp.clip(samples, -0.999999, 0.999999))
    np.testing.assert_allclose(pre_tanh.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(pre_tanh.std(0), jnp.exp(log_std), rtol=0.05)
    # reparameterised: the sampled action depends on log_std through the noise
    grad = jax.grad(lambda p: policy.act(p, normalizer, policy.initial_carry(), obs, keys[0])[1].sum())(params)
    assert float(jnp.abs(grad["params"]["log_std"]).sum()) > 0


def test_value_network_maps_a_batch_of_observations_to_scalars():
    critic = make_value_network((32, 32), "elu", layer_norm=True)
    params = critic.init(jax.random.PRNGKey(0), jnp.zeros(OBS))
    assert critic.apply(params, jnp.ones((6, OBS))).shape == (6,)
    with pytest.raises(ValueError, match="unknown activation"):
        make_value_network((8,), "sigmoidish")


def test_unknown_policy_lists_the_choices():
    with pytest.raises(ValueError, match="unknown policy 'lstm'; valid choices: gru, mlp, gaussian_mlp, state_std_mlp"):
        make_policy({"name": "lstm"}, OBS, ACT)


def test_parameters_follow_the_precision_of_the_run():
    policy = make_policy({"name": "mlp", "hidden_sizes": [4]}, OBS, ACT)
    assert {x.dtype for x in jax.tree.leaves(policy.init(jax.random.PRNGKey(0)))} == {jnp.dtype("float32")}
    with jax.enable_x64(True):  # hardware.enable_x64=true: flax alone would still make float32 parameters
        assert {x.dtype for x in jax.tree.leaves(policy.init(jax.random.PRNGKey(0)))} == {jnp.dtype("float64")}


# --- the observation normaliser's options (policy.normalizer, set per algorithm as algo.normalizer) ---


def authors_normalizer(batch: np.ndarray, prior: float, clip: float):
    """Brax 0.0.10's normalization.py, written from its definition: the variance sum starts at ``prior``
    unit-variance samples, the variance is clipped to [1e-6, 1e6], the output to +-clip."""
    mean = batch.mean(0)
    variance = np.clip((prior + ((batch - mean) ** 2).sum(0)) / (prior + len(batch)), 1e-6, 1e6)
    return lambda obs: np.clip((obs - mean) / np.sqrt(variance), -clip, clip)


def test_the_authors_normalizer_has_a_unit_variance_prior_and_clips_to_5():
    # One input barely moves (as a pole's angle does in a first rollout): without the prior it is blown up.
    batch = np.random.RandomState(0).randn(6, 3).astype(np.float32) * np.array([1.0, 50.0, 1e-3], np.float32)
    obs = np.array([0.5, 20.0, 0.05], np.float32)
    policy = make_policy({"name": "mlp", "normalizer": {"variance_prior": 1.0, "clip": 5.0}}, 3, 1)
    state = policy.update_normalizer(policy.init_normalizer(), jnp.asarray(batch))
    expected = authors_normalizer(batch, 1.0, 5.0)(obs)
    np.testing.assert_allclose(policy.normalize(jnp.asarray(obs), state), expected, rtol=1e-5)
    assert abs(expected[2]) < 1.0  # the prior keeps the still input near its scale; Brax's would give ~50
    brax = make_policy({"name": "mlp"}, 3, 1)
    assert abs(brax.normalize(jnp.asarray(obs), brax.update_normalizer(brax.init_normalizer(), batch))[2]) > 5


def test_a_clipped_input_is_clipped_and_passes_no_gradient():
    policy = make_policy({"name": "mlp", "normalizer": {"clip": 5.0}}, 2, 1)
    state = policy.init_normalizer()  # identity statistics
    out = policy.normalize(jnp.array([7.0, -2.0]), state)
    np.testing.assert_array_equal(out, [5.0, -2.0])
    grad = jax.grad(lambda o: jnp.sum(policy.normalize(o, state)))(jnp.array([7.0, -2.0]))
    np.testing.assert_array_equal(grad, [0.0, 1.0])


def test_non_finite_observations_are_never_folded_into_the_normalizer():
    batch = np.random.RandomState(1).randn(8, 3).astype(np.float32)
    poisoned = batch.copy()
    poisoned[2, 1], poisoned[5, 0] = np.nan, np.inf
    policy = make_policy({"name": "mlp"}, 3, 1)
    clean = policy.update_normalizer(policy.init_normalizer(), jnp.asarray(np.delete(batch, [2, 5], 0)))
    folded = policy.update_normalizer(policy.init_normalizer(), jnp.asarray(poisoned))
    np.testing.assert_allclose(folded.mean, clean.mean, rtol=1e-6)
    np.testing.assert_allclose(folded.std, clean.std, rtol=1e-6)
    all_bad = policy.update_normalizer(clean, jnp.full((4, 3), jnp.nan))
    np.testing.assert_array_equal(all_bad.mean, clean.mean)
    np.testing.assert_array_equal(all_bad.std, clean.std)


def test_algo_normalizer_options_reach_the_built_policy_and_bad_ones_are_refused():
    from diffrl.experiment import build_env, build_policy

    cfg = compose_train("algo=ce_apg", "algo.normalizer.clip=5.0", "algo.normalizer.variance_prior=1.0")
    policy = build_policy(cfg, build_env(cfg))
    assert policy.normalizer.clip == 5.0 and policy.normalizer.variance_prior == 1.0
    with pytest.raises(ValueError, match="clip must be positive"):
        make_policy({"name": "mlp", "normalizer": {"clip": 0.0}}, 2, 1)
