"""Slice-autoregressive context model and the grouped entropy-parameter network (MODEL.md §2).

Channel order is the official one so checkpoints convert by transposes:
- context conv output c_o belongs to slice c_o // (2*W) (W = slice width); after the conv the
  channels are reordered from (slice, 2, W) to (2, slice, W): [ctxA of every slice | ctxB ...].
- entropy parameters see cat(hyper, ctx) = [sigma_h | mu_h | ctxA | ctxB] (4 blocks x S slices
  x W) regrouped to (S, 4, W) so group s holds [sigma_h_s, mu_h_s, ctxA_s, ctxB_s]; the output
  (S, 2, W) is reordered to (2, S, W): [sigma | mu].

Both networks compute in the model's `dtype` at its `precision` (layers.py); the last
entropy-parameter conv stores (sigma, mu) in float32 whatever the dtype, since they are the
Gaussian's parameters (rates, and the grid y is quantized around: y_hat = round(y - mu) + mu).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.nn.layers import (
    HIGHEST,
    TorchConv2d,
    leaky_relu,
    torch_default_bias_init,
    torch_default_kernel_init,
)

CONTEXT_KERNEL = 5


@functools.cache
def context_mask(in_channels: int, num_slices: int, kernel: int = CONTEXT_KERNEL) -> np.ndarray:
    """(k, k, C_in, 2*C_in) HWIO mask: 1 where a tap is visible.

    Output slice s_o sees every tap of input slices s_i < s_o, the causal raster half
    (type-A: rows above the centre and the centre row left of the centre) of its own slice, and
    nothing of later slices.
    """
    out_channels = 2 * in_channels
    s_in = np.arange(in_channels) // (in_channels // num_slices)
    s_out = np.arange(out_channels) // (out_channels // num_slices)
    c = kernel // 2
    causal = np.zeros((kernel, kernel), np.float32)
    causal[:c, :] = 1.0
    causal[c, :c] = 1.0
    earlier = (s_in[:, None] < s_out[None, :]).astype(np.float32)  # (I, O)
    same = (s_in[:, None] == s_out[None, :]).astype(np.float32)
    return earlier[None, None] + same[None, None] * causal[:, :, None, None]


def _slice_major_to_pair_major(x: jax.Array, num_slices: int) -> jax.Array:
    """(..., S*2*W) laid out as (S, 2, W) -> (2, S, W)."""
    lead = x.shape[:-1]
    w = x.shape[-1] // (2 * num_slices)
    x = x.reshape(*lead, num_slices, 2, w)
    return jnp.swapaxes(x, -3, -2).reshape(*lead, -1)


class ContextModel(nn.Module):
    """Masked 5x5 conv C -> 2C with bias; the mask is a constant multiplied onto the kernel.

    Masking inside autodiff means masked taps get zero gradient (the official code masks in
    place, so its masked taps do get gradients: reference `grad_norm` vs `grad_norm_ctx_masked`).
    """

    num_slices: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, y_hat: jax.Array) -> jax.Array:
        c_in = y_hat.shape[-1]
        k = CONTEXT_KERNEL
        fan_in = c_in * k * k
        kernel = self.param("kernel", torch_default_kernel_init(), (k, k, c_in, 2 * c_in))
        bias = self.param("bias", torch_default_bias_init(fan_in), (2 * c_in,))
        mask = jnp.asarray(context_mask(c_in, self.num_slices, k))
        out = jax.lax.conv_general_dilated(
            y_hat.astype(self.dtype),
            (kernel * mask).astype(self.dtype),
            window_strides=(1, 1),
            padding=((2, 2), (2, 2)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        return _slice_major_to_pair_major(out + bias.astype(self.dtype), self.num_slices)


class EntropyParameters(nn.Module):
    """Three grouped 1x1 convs 4C -> 3C -> 3C -> 2C (S groups), LeakyReLU(0.01) between."""

    num_slices: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, hyper: jax.Array, ctx: jax.Array) -> jax.Array:
        s = self.num_slices
        conv = functools.partial(TorchConv2d, groups=s, dtype=self.dtype, precision=self.precision)
        x = jnp.concatenate([hyper, ctx], axis=-1)
        lead, c4 = x.shape[:-1], x.shape[-1]
        x = x.reshape(*lead, 4, s, c4 // (4 * s))
        x = jnp.swapaxes(x, -3, -2).reshape(*lead, c4)  # (S, 4, W): one group per slice
        x = leaky_relu(conv(c4 * 3 // 4, 1, name="conv_0")(x))
        x = leaky_relu(conv(c4 * 3 // 4, 1, name="conv_2")(x))
        x = conv(c4 // 2, 1, out_dtype=jnp.float32, name="conv_4")(x)  # float32 (docstring)
        return _slice_major_to_pair_major(x, s)
