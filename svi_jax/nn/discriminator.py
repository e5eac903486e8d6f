"""Conditional PatchGAN discriminator for the GAN fine-tune (MODEL.md §4, HiFiC-style).

D(x, y_hat, l): y_hat[..., :W*l] -> level-specific Conv(W*l -> 12, k3, reflect pad) ->
LeakyReLU(0.2) -> nearest x16 upsample, concatenated with the image (3 + 12 channels) ->
4 spectral-norm convs k4 s2 p1 (64, 128, 256, 512; LeakyReLU 0.2) -> 1x1 conv -> logits.

The level is traced: the S conditioning convs are one stacked kernel (S, 3, 3, C, 12); level
l selects kernel l-1 and the input channels >= W*l are masked to zero, which is exactly a
Conv(W*l -> 12) per level. Spectral normalisation is `flax.linen.SpectralNorm`; its
power-iteration vectors live in the `batch_stats` collection (updated on D steps only).
Convolutions compute in the model's `dtype` at its `precision` (config `model.dtype`,
`model.precision`; parameters float32); the power iteration and the logits are float32
(the logits feed the BCE losses).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from svi_jax.nn.entropy_models import channel_mask
from svi_jax.nn.layers import HIGHEST, compute_dtype, matmul_precision

UPSAMPLE = 16  # y_hat is 16x smaller than the image on each side


class ConditionalPatchDiscriminator(nn.Module):
    num_slices: int = 16  # S: number of levels / conditioning convs
    slice_width: int = 32  # W: latent channels per slice
    cond_channels: int = 12  # channels of the conditioning branch
    widths: Sequence[int] = (64, 128, 256, 512)  # spectral-norm conv widths
    negative_slope: float = 0.2  # LeakyReLU slope
    dtype: object = jnp.float32  # compute dtype of the convolutions
    precision: jax.lax.Precision = HIGHEST  # precision of the convolutions

    @nn.compact
    def __call__(
        self, x: jax.Array, y_hat: jax.Array, level: jax.Array, update_stats: bool = False
    ) -> jax.Array:
        """x (B, H, W, 3) in [0, 1]; y_hat (B, H/16, W/16, C); level traced int -> logits."""
        c = y_hat.shape[-1]
        kernels = self.param(
            "cond_kernels",
            nn.initializers.lecun_normal(in_axis=(1, 2, 3), out_axis=4, batch_axis=(0,)),
            (self.num_slices, 3, 3, c, self.cond_channels),
        )
        biases = self.param(
            "cond_biases", nn.initializers.zeros, (self.num_slices, self.cond_channels)
        )
        index = jnp.asarray(level, jnp.int32) - 1
        mask = channel_mask(c, level, self.slice_width)
        y = jnp.where(mask, y_hat, 0.0)
        y = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        kernel = jnp.take(kernels, index, axis=0)
        dt = self.dtype
        cond = jax.lax.conv_general_dilated(
            y.astype(dt),
            kernel.astype(dt),
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        bias = jnp.take(biases, index, axis=0).astype(dt)
        cond = nn.leaky_relu(cond + bias, self.negative_slope)
        cond = jnp.repeat(jnp.repeat(cond, UPSAMPLE, axis=1), UPSAMPLE, axis=2)
        h = jnp.concatenate([x.astype(dt), cond], axis=-1)
        for i, width in enumerate(self.widths):
            conv = nn.Conv(
                width,
                (4, 4),
                strides=2,
                padding=((1, 1), (1, 1)),
                dtype=dt,
                precision=self.precision,
                name=f"conv{i}",
            )
            h = nn.SpectralNorm(conv, name=f"sn{i}")(h, update_stats=update_stats)
            h = nn.leaky_relu(h, self.negative_slope)
        logits = nn.Conv(1, (1, 1), precision=self.precision, name="logits")
        return logits(h.astype(jnp.float32))


def build_discriminator(config) -> ConditionalPatchDiscriminator:
    m, g = config.model, config.gan
    return ConditionalPatchDiscriminator(
        num_slices=m.num_slices,
        slice_width=m.latent_channels // m.num_slices,
        cond_channels=g.cond_channels,
        widths=tuple(g.widths),
        dtype=compute_dtype(m.get("dtype", "float32")),
        precision=matmul_precision(m.get("precision", "highest")),
    )


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy against a constant label (non-saturating GAN loss)."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))
