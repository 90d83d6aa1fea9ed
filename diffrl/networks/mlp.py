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
# How the Dense layers start: flax's defaults (LeCun normal, zero bias); PyTorch's nn.Linear (weights and
# biases U(+-1/sqrt(fan_in)): SHAC's actor); orthogonal with gain sqrt(2) and zero bias (SHAC's critic).
INITS = ("flax", "pytorch", "orthogonal")


def symmetric_uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def dense(width: int, fan_in: int, initializer: str) -> nn.Dense:
    if initializer == "pytorch":
        bound = 1.0 / fan_in**0.5
        return nn.Dense(width, kernel_init=symmetric_uniform(bound), bias_init=symmetric_uniform(bound))
    if initializer == "orthogonal":
        return nn.Dense(width, kernel_init=nn.initializers.orthogonal(2**0.5), bias_init=nn.initializers.zeros)
    if initializer != "flax":
        raise ValueError(f"unknown initializer {initializer!r}; valid choices: {', '.join(INITS)}")
    return nn.Dense(width)


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers each followed by the activation (and then LayerNorm, if asked: SHAC's authors' order),
    then a linear output."""

    hidden_sizes: Sequence[int]
    output_size: int
    activation: str = "elu"
    layer_norm: bool = False
    initializer: str = "flax"  # one of INITS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation_fn(self.activation)
        for width in self.hidden_sizes:
            x = act(dense(width, x.shape[-1], self.initializer)(x))
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return dense(self.output_size, x.shape[-1], self.initializer)(x)


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
    initializer: str = "pytorch"  # SHAC's actor: PyTorch's nn.Linear init

    @nn.compact
    def __call__(self, carry: jax.Array, obs: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        mean = MLP(self.hidden_sizes, self.action_size, self.activation, self.layer_norm, self.initializer)(obs)
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
    initializer: str = "pytorch",
) -> Policy:
    dense(1, 1, initializer)  # fail on a bad name now, not at the first trace
    module = GaussianMLP(action_size, tuple(hidden_sizes), activation, layer_norm, init_log_std, initializer)
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
    initializer: str = "orthogonal"  # SHAC's critic: orthogonal, gain sqrt(2), zero bias

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden_sizes, 1, self.activation, self.layer_norm, self.initializer)(obs)[..., 0]


def make_value_network(
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "elu",
    layer_norm: bool = True,
    initializer: str = "orthogonal",
) -> ValueNetwork:
    activation_fn(activation)  # fail on a bad name now, not at the first trace
    dense(1, 1, initializer)
    return ValueNetwork(tuple(hidden_sizes), activation, layer_norm, initializer)
