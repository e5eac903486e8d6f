"""Small building blocks shared by the transforms: PyTorch-compatible init, LayerNorm, convs.

The official model is PyTorch; its checkpoints must convert by transposes alone, so layers here
keep PyTorch's numerics (LayerNorm eps 1e-5, explicit conv paddings, exact GELU) and its
initialisation distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-5  # PyTorch nn.LayerNorm default (Flax's is 1e-6).


def trunc_normal_init(std: float = 0.02, bound: float = 2.0):
    """timm's trunc_normal_(std): a normal cut at +-`bound` in absolute value (not in stds)."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.clip(std * jax.random.normal(key, shape, dtype), -bound, bound)

    return init


def torch_default_uniform(fan_in: int):
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def kaiming_normal_fan_out(fan_out: int, gain: float):
    std = gain / math.sqrt(fan_out)

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def layer_norm(name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, name=name)


def linear(features: int, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    """nn.Linear as in the Swin code: trunc-normal(.02) weights, zero bias."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=trunc_normal_init(0.02),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class TorchConv2d(nn.Module):
    """nn.Conv2d with explicit symmetric padding (NHWC, HWIO kernel).

    Flax 'SAME' at stride 2 pads (1, 2) instead of PyTorch's (2, 2) and shifts the sampling grid,
    so padding is always explicit here.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kernel_init: object = None
    bias_init: object = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        in_ch = x.shape[-1]
        fan_in = in_ch // self.groups * k * k
        kernel = self.param(
            "kernel",
            self.kernel_init or torch_default_uniform(fan_in),
            (k, k, in_ch // self.groups, self.features),
        )
        bias = self.param("bias", self.bias_init or torch_default_uniform(fan_in), (self.features,))
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=jax.lax.Precision.HIGHEST,
        )
        return y + bias.astype(x.dtype)


class TorchConvTranspose2d(nn.Module):
    """nn.ConvTranspose2d(k, stride, padding, output_padding), NHWC.

    The kernel is stored as (kH, kW, in, out), the PyTorch (in, out, kH, kW) tensor transposed
    by (2, 3, 0, 1), so official weights convert by a transpose; the spatial flip that turns a
    transposed convolution into a dilated convolution happens here, at call time.
    Output size: (H - 1) * stride - 2 * padding + k + output_padding.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    kernel_init: object = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        in_ch = x.shape[-1]
        # PyTorch computes ConvTranspose fan_in from weight.size(1) = out channels.
        fan_in = self.features * k * k
        kernel = self.param(
            "kernel",
            self.kernel_init or torch_default_uniform(fan_in),
            (k, k, in_ch, self.features),
        )
        bias = self.param("bias", torch_default_uniform(fan_in), (self.features,))
        lo = k - 1 - self.padding
        hi = k - 1 - self.padding + self.output_padding
        y = jax.lax.conv_general_dilated(
            x,
            kernel[::-1, ::-1].astype(x.dtype),
            window_strides=(1, 1),
            padding=((lo, hi), (lo, hi)),
            lhs_dilation=(self.stride, self.stride),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        return y + bias.astype(x.dtype)


def leaky_relu(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, negative_slope=0.01)  # PyTorch default slope


def as_pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))
