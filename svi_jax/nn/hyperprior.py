"""Hyper analysis h_a (y -> z, /4) and hyper synthesis h_s (z_hat -> [sigma_hyper | mu_hyper]).

Both compute in the model's `dtype` at its `precision` (layers.py). h_a's last conv stores z
in float32 whatever the dtype: z is rounded around the bottleneck medians and its
likelihoods are the z rate, so it must not carry bf16's 8-bit mantissa (a spacing of 0.25 at
|z| = 50). h_s feeds only the entropy-parameter network, whose own last layer restores float32.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from svi_jax.nn.layers import (
    HIGHEST,
    TorchConv2d,
    TorchConvTranspose2d,
    kaiming_normal_fan_out,
    leaky_relu,
)

_GAIN_LEAKY = math.sqrt(2.0)  # kaiming_normal_(nonlinearity='leaky_relu', a=0)


class HyperAnalysis(nn.Module):
    """Conv(C->3C/4, k3, s1, p1), LeakyReLU, Conv(k5, s2, p2), LeakyReLU, Conv(k5, s2, p2)."""

    hyper_channels: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        c = self.hyper_channels
        conv = functools.partial(TorchConv2d, dtype=self.dtype, precision=self.precision)
        x = conv(c, 3, 1, 1, kernel_init=kaiming_normal_fan_out(_GAIN_LEAKY), name="conv_0")(y)
        x = leaky_relu(x)
        x = conv(c, 5, 2, 2, kernel_init=kaiming_normal_fan_out(_GAIN_LEAKY), name="conv_2")(x)
        x = leaky_relu(x)
        return conv(
            c,
            5,
            2,
            2,
            kernel_init=kaiming_normal_fan_out(1.0),
            out_dtype=jnp.float32,  # z in float32 (module docstring)
            name="conv_4",
        )(x)


class HyperSynthesis(nn.Module):
    """ConvT(k5,s2,p2,op1), ReLU, ConvT(k5,s2,p2,op1), ReLU, ConvT(k3,s1,p1) -> 2C channels.

    Channels [0:C] are sigma_hyper, [C:2C] mu_hyper (the official chunk(2) order).
    """

    latent_channels: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, z_hat: jax.Array) -> jax.Array:
        c = self.latent_channels
        deconv = functools.partial(TorchConvTranspose2d, dtype=self.dtype, precision=self.precision)
        x = deconv(
            c,
            5,
            2,
            2,
            1,
            kernel_init=kaiming_normal_fan_out(_GAIN_LEAKY, transposed=True),
            name="deconv_0",
        )(z_hat)
        x = jax.nn.relu(x)
        x = deconv(
            c * 3 // 2,
            5,
            2,
            2,
            1,
            kernel_init=kaiming_normal_fan_out(_GAIN_LEAKY, transposed=True),
            name="deconv_2",
        )(x)
        x = jax.nn.relu(x)
        return deconv(
            c * 2,
            3,
            1,
            1,
            0,
            kernel_init=kaiming_normal_fan_out(1.0, transposed=True),
            name="deconv_4",
        )(x)
