"""Hyper analysis h_a (y -> z, /4) and hyper synthesis h_s (z_hat -> [sigma_hyper | mu_hyper])."""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from svi_jax.nn.layers import TorchConv2d, TorchConvTranspose2d, kaiming_normal_fan_out, leaky_relu

_GAIN_LEAKY = math.sqrt(2.0)  # kaiming_normal_(nonlinearity='leaky_relu', a=0)


class HyperAnalysis(nn.Module):
    """Conv(C->3C/4, k3, s1, p1), LeakyReLU, Conv(k5, s2, p2), LeakyReLU, Conv(k5, s2, p2)."""

    hyper_channels: int

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        c = self.hyper_channels
        x = TorchConv2d(
            c, 3, 1, 1, kernel_init=kaiming_normal_fan_out(c * 9, _GAIN_LEAKY), name="conv_0"
        )(y)
        x = leaky_relu(x)
        x = TorchConv2d(
            c, 5, 2, 2, kernel_init=kaiming_normal_fan_out(c * 25, _GAIN_LEAKY), name="conv_2"
        )(x)
        x = leaky_relu(x)
        return TorchConv2d(
            c, 5, 2, 2, kernel_init=kaiming_normal_fan_out(c * 25, 1.0), name="conv_4"
        )(x)


class HyperSynthesis(nn.Module):
    """ConvT(k5,s2,p2,op1), ReLU, ConvT(k5,s2,p2,op1), ReLU, ConvT(k3,s1,p1) -> 2C channels.

    Channels [0:C] are sigma_hyper, [C:2C] mu_hyper (the official chunk(2) order).
    """

    latent_channels: int

    @nn.compact
    def __call__(self, z_hat: jax.Array) -> jax.Array:
        c = self.latent_channels
        # torch's fan_out of a ConvTranspose2d weight (in, out, k, k) is in * k * k.
        c_in = z_hat.shape[-1]
        x = TorchConvTranspose2d(
            c,
            5,
            2,
            2,
            1,
            kernel_init=kaiming_normal_fan_out(c_in * 25, _GAIN_LEAKY),
            name="deconv_0",
        )(z_hat)
        x = jax.nn.relu(x)
        x = TorchConvTranspose2d(
            c * 3 // 2,
            5,
            2,
            2,
            1,
            kernel_init=kaiming_normal_fan_out(c * 25, _GAIN_LEAKY),
            name="deconv_2",
        )(x)
        x = jax.nn.relu(x)
        return TorchConvTranspose2d(
            c * 2,
            3,
            1,
            1,
            0,
            kernel_init=kaiming_normal_fan_out(c * 3 // 2 * 9, 1.0),
            name="deconv_4",
        )(x)
