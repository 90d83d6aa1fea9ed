"""Layers for small networks evaluated for a population of weights at once (CE-APG, PAPG, CEM).

Under ``vmap`` over candidates, a ``Dense`` layer becomes a batched matmul with one tiny weight matrix per
candidate (e.g. 24 x [4, 16] @ [16, 16]). XLA's CPU backend runs that as one small GEMM call per
candidate, forward and backward, at every step of a 500-step scan. A broadcast multiply and a sum over
the input axis computes the same product as one fused loop instead; with the GRU's six gate matmuls
merged into two, one CE-APG iteration at the paper's settings runs ~3x faster on 2 CPU cores
(``benchmarks/bench_ceapg_speed.py``). Only the order of the additions changes: float round-off.

``Dense`` and ``GRUCell`` create exactly the parameters of ``flax.linen.Dense`` and ``flax.linen.GRUCell``
(names, shapes, initialisers, random streams): the same key initialises the same network either way.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Kernels up to this many weights use the fused multiply-and-sum; larger ones are worth a GEMM call.
FUSED_MATMUL_MAX_WEIGHTS = 64 * 64


def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` over the last axis of ``x`` as a broadcast multiply and a sum (fuses on CPU)."""
    if kernel.size > FUSED_MATMUL_MAX_WEIGHTS:
        return x @ kernel
    return jnp.sum(x[..., :, None] * kernel, axis=-2)


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """``lax.dot_general`` as ``flax.linen.Dense`` calls it, routed through ``matmul``."""
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if tuple(lhs_contract) != (lhs.ndim - 1,) or tuple(rhs_contract) != (0,) or any(batch):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=preferred_element_type)
    return matmul(lhs, rhs)


class Dense(nn.Dense):
    """``flax.linen.Dense`` computed with ``matmul``."""

    dot_general: object = dense_dot_general


class _Weights(nn.Module):
    """The parameters of a ``flax.linen.Dense`` (same names, shapes, initialisers and order), unapplied."""

    features: int
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, in_features: int, dtype) -> tuple[jax.Array, jax.Array | None]:
        kernel = self.param("kernel", self.kernel_init, (in_features, self.features), dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), dtype) if self.use_bias else None
        return kernel, bias


class GRUCell(nn.Module):
    """``flax.linen.GRUCell`` (same parameters, same equations) with its three input matmuls merged into one
    and its three recurrent matmuls into another: two fused matmuls a step instead of six.

    r = sigmoid(W_ir x + b_ir + W_hr h),  z = sigmoid(W_iz x + b_iz + W_hz h),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
    """

    features: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        n, dtype = self.features, self.param_dtype
        recurrent_init = nn.initializers.orthogonal()
        ir, iz, in_ = (_Weights(n, name=name)(inputs.shape[-1], dtype) for name in ("ir", "iz", "in"))
        hr, hz = (_Weights(n, False, recurrent_init, name=name)(n, dtype) for name in ("hr", "hz"))
        hn = _Weights(n, True, recurrent_init, name="hn")(n, dtype)
        gates_in = matmul(inputs, jnp.concatenate([ir[0], iz[0], in_[0]], axis=1))
        gates_in = gates_in + jnp.concatenate([ir[1], iz[1], in_[1]])
        gates_h = matmul(carry, jnp.concatenate([hr[0], hz[0], hn[0]], axis=1))
        r = nn.sigmoid(gates_in[..., :n] + gates_h[..., :n])
        z = nn.sigmoid(gates_in[..., n : 2 * n] + gates_h[..., n : 2 * n])
        candidate = jnp.tanh(gates_in[..., 2 * n :] + r * (gates_h[..., 2 * n :] + hn[1]))
        new_carry = (1.0 - z) * candidate + z * carry
        return new_carry, new_carry
