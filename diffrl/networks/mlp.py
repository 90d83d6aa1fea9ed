"""Feed-forward networks: the deterministic MLP policy, the tanh-Normal MLP policies and the value network
(critics). Widths, activation and LayerNorm are configurable (SHAC uses ELU + LayerNorm).

Two tanh-Normal policies: ``gaussian_mlp`` (SHAC's actor: a free, state-independent log-std parameter) and
``state_std_mlp`` (Brax's ``NormalTanhDistribution`` as ILD's authors used it: one network outputs the mean
and a pre-std, std = softplus(pre-std) + ``min_std``, so the std depends on the state)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diffrl.networks.base import Policy

ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu, "tanh": jnp.tanh, "swish": nn.swish, "silu": nn.silu}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers with an activation (and LayerNorm after each, if asked), then a linear output."""

    hidden_sizes: Sequence[int]
    output_size: int
    activation: str = "elu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for width in self.hidden_sizes:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return nn.Dense(self.output_size)(x)


class DeterministicMLP(nn.Module):
    """obs -> MLP -> tanh: an action in [-1, 1]. The carry passes through untouched (feed-forward)."""

    action_size: int
    hidden_sizes: Sequence[int]
    activation: str = "elu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return carry, jnp.tanh(MLP(self.hidden_sizes, self.action_size, self.activation, self.layer_norm)(obs))


class GaussianMLP(nn.Module):
    """obs -> MLP -> mean, with a state-independent log-std parameter; the action is tanh of a sample."""

    action_size: int
    hidden_sizes: Sequence[int]
    activation: str = "elu"
    layer_norm: bool = True
    init_log_std: float = -1.0

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        mean = MLP(self.hidden_sizes, self.action_size, self.activation, self.layer_norm)(obs)
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_size,))
        return carry, (mean, jnp.broadcast_to(log_std, mean.shape))


class StateStdMLP(nn.Module):
    """obs -> MLP -> (mean, pre-std); std = softplus(pre-std) + min_std (Brax 0.0.x's NormalTanhDistribution,
    ILD's policy). Outputs ``(mean, log std)``, the interface every tanh-Normal policy shares."""

    action_size: int
    hidden_sizes: Sequence[int]
    activation: str = "swish"
    layer_norm: bool = False
    min_std: float = 0.001

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        out = MLP(self.hidden_sizes, 2 * self.action_size, self.activation, self.layer_norm)(obs)
        mean, pre_std = jnp.split(out, 2, axis=-1)
        return carry, (mean, jnp.log(nn.softplus(pre_std) + self.min_std))


def make_mlp_policy(
    observation_size: int,
    action_size: int,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "elu",
    layer_norm: bool = False,
) -> Policy:
    module = DeterministicMLP(action_size, tuple(hidden_sizes), activation, layer_norm)
    return Policy("mlp", module, observation_size, action_size)


def make_gaussian_mlp_policy(
    observation_size: int,
    action_size: int,
    hidden_sizes: Sequence[int] = (128, 64, 32),
    activation: str = "elu",
    layer_norm: bool = True,
    init_log_std: float = -1.0,
) -> Policy:
    module = GaussianMLP(action_size, tuple(hidden_sizes), activation, layer_norm, init_log_std)
    return Policy("gaussian_mlp", module, observation_size, action_size, stochastic=True)


def make_state_std_mlp_policy(
    observation_size: int,
    action_size: int,
    hidden_sizes: Sequence[int] = (512, 256),
    activation: str = "swish",
    layer_norm: bool = False,
    min_std: float = 0.001,
) -> Policy:
    activation_fn(activation)
    if min_std <= 0:
        raise ValueError(f"policy.min_std must be positive, got {min_std}")
    module = StateStdMLP(action_size, tuple(hidden_sizes), activation, layer_norm, min_std)
    return Policy("state_std_mlp", module, observation_size, action_size, stochastic=True)


class ValueNetwork(nn.Module):
    """A critic: obs (already normalised by the caller) -> scalar value."""

    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "elu"
    layer_norm: bool = True

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, 1, self.activation, self.layer_norm)(obs)[..., 0]


def make_value_network(
    hidden_sizes: Sequence[int] = (64, 64), activation: str = "elu", layer_norm: bool = True
) -> ValueNetwork:
    activation_fn(activation)  # fail on a bad name now, not at the first trace
    return ValueNetwork(tuple(hidden_sizes), activation, layer_norm)
