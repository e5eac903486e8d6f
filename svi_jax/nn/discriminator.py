"""Conditional PatchGAN discriminator for the GAN fine-tune (SPEC §4, HiFiC-style).

D(x, y_hat, l): y_hat[..., :W*l] -> level-specific Conv(W*l -> 12, k3, reflect pad) ->
LeakyReLU(0.2) -> nearest x16 upsample, concatenated with the image (3 + 12 channels) ->
4 spectral-norm convs k4 s2 p1 (64, 128, 256, 512; LeakyReLU 0.2) -> 1x1 conv -> logits.

The level is traced: the S conditioning convs are one stacked kernel (S, 3, 3, C, 12); level
l selects kernel l-1 and the input channels >= W*l are masked to zero, which is exactly a
Conv(W*l -> 12) per level. Spectral normalisation is `flax.linen.SpectralNorm`; its
power-iteration vectors live in the `batch_stats` collection (updated on D steps only).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from svi_jax.nn.entropy_models import channel_mask

UPSAMPLE = 16  # y_hat is 16x smaller than the image on each side


class ConditionalPatchDiscriminator(nn.Module):
    num_slices: int = 16  # S: number of levels / conditioning convs
    slice_width: int = 32  # W: latent channels per slice
    cond_channels: int = 12  # channels of the conditioning branch
    widths: Sequence[int] = (64, 128, 256, 512)  # spectral-norm conv widths
    negative_slope: float = 0.2  # LeakyReLU slope

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
        cond = jax.lax.conv_general_dilated(
            y, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        cond = nn.leaky_relu(cond + jnp.take(biases, index, axis=0), self.negative_slope)
        cond = jnp.repeat(jnp.repeat(cond, UPSAMPLE, axis=1), UPSAMPLE, axis=2)
        h = jnp.concatenate([x, cond], axis=-1)
        for i, width in enumerate(self.widths):
            conv = nn.Conv(width, (4, 4), strides=2, padding=((1, 1), (1, 1)), name=f"conv{i}")
            h = nn.SpectralNorm(conv, name=f"sn{i}")(h, update_stats=update_stats)
            h = nn.leaky_relu(h, self.negative_slope)
        return nn.Conv(1, (1, 1), name="logits")(h)


def build_discriminator(config) -> ConditionalPatchDiscriminator:
    m, g = config.model, config.gan
    return ConditionalPatchDiscriminator(
        num_slices=m.num_slices,
        slice_width=m.latent_channels // m.num_slices,
        cond_channels=g.cond_channels,
        widths=tuple(g.widths),
    )


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
    """Mean binary cross-entropy against a constant label (non-saturating GAN loss)."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))
