"""Wavefront evaluation of the slice-autoregressive Gaussian parameters (μ, σ) of ŷ.

Under the 5×5 type-A mask, latent (i, j) of slice s sees its own slice only at (i, j−1),
(i, j−2) and rows i−1, i−2 (columns j−2..j+2). With t = 3·i + j every such neighbour has a
smaller t, so all positions of one anti-diagonal t can be decoded together: a slice of h×w
latents takes 3·(h−1) + w steps instead of h·w.

Per slice s (a traced integer, so one compilation per latent size serves every slice):
- `slice_prologue`: the context contribution of the already decoded slices < s (all 25 taps,
  one convolution restricted to slice s's 2W outputs) plus the context bias, and slice s's
  hyper features [σ_h_s, μ_h_s].
- `wavefront_step`: for the positions of one step (padded to a fixed length), the masked
  within-slice 5×5 taps gathered from the partly decoded slice, then the entropy-parameter
  group s (three grouped 1×1 convs restricted to group s) -> (σ, μ) at those positions.

The encoder and the decoder call these same jitted functions on the same shapes with the same
inputs (the encoder replays the decoder's buffer state step by step), so the (μ, σ) that feed
the range coder are bit-identical on one platform/library version. The result is close to, but
not bit-equal to, `ProgressiveSIC.gaussian_params` on the full ŷ (other summation order).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.nn.context import CONTEXT_KERNEL
from svi_jax.nn.layers import leaky_relu

log = logging.getLogger(__name__)
_PAD = CONTEXT_KERNEL // 2


def _wavefronts(h: int, w: int) -> list[list[tuple[int, int]]]:
    fronts = [[(i, t - 3 * i) for i in range(h) if 0 <= t - 3 * i < w] for t in range(3 * h + w)]
    return [f for f in fronts if f]  # a step is empty only when w < 3


@functools.cache
def wavefront_schedule(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int32 arrays of shape (steps, M): steps = 3(h−1)+w for w >= 3, M = most
    positions in one step. Entries past `schedule_counts(h, w)[t]` repeat a real position."""
    fronts = _wavefronts(h, w)
    m = max(len(f) for f in fronts)
    padded = [f + [f[0]] * (m - len(f)) for f in fronts]
    rows = np.array([[p[0] for p in f] for f in padded], np.int32)
    cols = np.array([[p[1] for p in f] for f in padded], np.int32)
    return rows, cols


@functools.cache
def schedule_counts(h: int, w: int) -> np.ndarray:
    """Number of real (unpadded) positions of each wavefront step."""
    return np.array([len(f) for f in _wavefronts(h, w)], np.int64)


def raster_schedule(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One position per step in raster order (the plain sequential baseline, for benchmarks)."""
    rows, cols = np.divmod(np.arange(h * w, dtype=np.int32), w)
    return rows[:, None].astype(np.int32), cols[:, None].astype(np.int32)


def coding_params(params: dict) -> dict:
    """The parameter subtrees the step functions need (small pytree, passed to jit)."""
    return {"context": params["context_model"], "entropy": params["entropy_parameters"]}


def _causal_mask() -> np.ndarray:
    k, c = CONTEXT_KERNEL, _PAD
    mask = np.zeros((k, k), np.float32)
    mask[:c, :] = 1.0
    mask[c, :c] = 1.0
    return mask


@functools.partial(jax.jit, static_argnames=("num_slices",))
def slice_prologue(cparams, y_buf, hyper, s, *, num_slices: int):
    """y_buf (h, w, C) with slices < s decoded (others 0), hyper (h, w, 2C), s traced.

    -> (earlier (h, w, 2W): context bias + contribution of slices < s, hyper_s (h, w, 2W)).
    """
    log.info("compiling slice_prologue for latent %s", y_buf.shape)
    c = y_buf.shape[-1]
    width = c // num_slices
    kernel = cparams["context"]["kernel"]  # (5, 5, C, 2C), slice-major outputs
    kernel_s = jax.lax.dynamic_slice_in_dim(kernel, s * 2 * width, 2 * width, axis=3)
    bias_s = jax.lax.dynamic_slice_in_dim(cparams["context"]["bias"], s * 2 * width, 2 * width)
    earlier = (jnp.arange(c) < s * width).astype(kernel.dtype)
    y_in = y_buf * earlier
    out = jax.lax.conv_general_dilated(
        y_in[None],
        kernel_s * earlier[None, None, :, None],
        window_strides=(1, 1),
        padding=((_PAD, _PAD), (_PAD, _PAD)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )[0]
    sigma_h = jax.lax.dynamic_slice_in_dim(hyper, s * width, width, axis=2)
    mu_h = jax.lax.dynamic_slice_in_dim(hyper, c + s * width, width, axis=2)
    return out + bias_s, jnp.concatenate([sigma_h, mu_h], axis=-1)


def _group(conv: dict, s, num_slices: int):
    kernel = conv["kernel"][0, 0]  # (in/S, out)
    n = kernel.shape[1] // num_slices
    k = jax.lax.dynamic_slice_in_dim(kernel, s * n, n, axis=1)
    b = jax.lax.dynamic_slice_in_dim(conv["bias"], s * n, n)
    return k, b


@functools.partial(jax.jit, static_argnames=("num_slices",))
def wavefront_step(cparams, slice_buf, earlier, hyper_s, rows, cols, s, *, num_slices: int):
    """(σ, μ), each (M, W), at positions (rows, cols) of slice s.

    slice_buf (h, w, W): slice s with the positions of earlier steps decoded, 0 elsewhere (only
    causal taps are used, so later positions never matter). earlier, hyper_s: `slice_prologue`.
    """
    log.info("compiling wavefront_step for slice %s, %d positions", slice_buf.shape, rows.shape[0])
    width = slice_buf.shape[-1]
    k = CONTEXT_KERNEL
    kernel = cparams["context"]["kernel"]
    kernel_s = jax.lax.dynamic_slice(
        kernel, (0, 0, s * width, s * 2 * width), (k, k, width, 2 * width)
    )
    kernel_s = kernel_s * jnp.asarray(_causal_mask())[:, :, None, None]
    padded = jnp.pad(slice_buf, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)))
    patches = jax.vmap(lambda i, j: jax.lax.dynamic_slice(padded, (i, j, 0), (k, k, width)))(
        rows, cols
    )  # (M, 5, 5, W); padded coordinates: position (i, j) sits at (i+2, j+2)
    within = jnp.einsum("mabc,abcd->md", patches, kernel_s, precision=jax.lax.Precision.HIGHEST)
    ctx = earlier[rows, cols] + within  # (M, 2W) = [ctxA_s | ctxB_s]
    x = jnp.concatenate([hyper_s[rows, cols], ctx], axis=-1)  # group s input [σh, μh, A, B]
    ent = cparams["entropy"]
    hp = jax.lax.Precision.HIGHEST
    for name, act in (("conv_0", True), ("conv_2", True), ("conv_4", False)):
        kern, bias = _group(ent[name], s, num_slices)
        x = jnp.dot(x, kern, precision=hp) + bias
        if act:
            x = leaky_relu(x)
    return x[:, :width], x[:, width:]
