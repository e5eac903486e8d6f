"""Wavefront evaluation of the slice-autoregressive Gaussian parameters (μ, σ) of ŷ.

Under the 5×5 type-A mask, latent (i, j) of slice s sees its own slice only at (i, j−1),
(i, j−2) and rows i−1, i−2 (columns j−2..j+2). With t = 3·i + j every such neighbour has a
smaller t, so all positions of one anti-diagonal t can be decoded together: a slice of h×w
latents takes 3·(h−1) + w steps instead of h·w.

The decoder (`decode_slice`) runs the integer entropy model (`integer_model`) step by step:
for the positions of one step, the own slice's causal 5×5 taps are gathered from the partly
decoded slice and added to the exact context accumulators of the earlier slices, then the
entropy-parameter group s gives (σ_q, μ_q) at those positions. The encoder computes the same
integers for all positions at once (`IntegerEntropyModel.gaussian_params`): integer sums do
not depend on how they are grouped, so it need not replay the decoder's steps. Both code one
range-coder chunk per step.
"""

from __future__ import annotations

import functools

import numpy as np

from svi_jax.codec.integer_model import Y_LIMIT, IntegerEntropyModel
from svi_jax.nn.context import CONTEXT_KERNEL

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


def _window_offsets() -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(np.arange(CONTEXT_KERNEL), np.arange(CONTEXT_KERNEL), indexing="ij")
    return a[None], b[None]


def step_params(model: IntegerEntropyModel, buf, earlier_s, hyper_s, rows, cols, s: int):
    """(σ_q, μ_q), each (n, W) Q12 int64, at positions (rows, cols) of slice s.

    buf (h + 4, w + 4, W): slice s's ŷ symbols (clipped as the context model sees them) at the
    positions of earlier steps, 0 elsewhere, with a 2-wide zero border; earlier_s (h, w, 2W):
    exact context accumulators of slices < s; hyper_s (h, w, 2W) Q12 [σ_h_s | μ_h_s].
    """
    a, b = _window_offsets()
    patches = buf[rows[:, None, None] + a, cols[:, None, None] + b]  # (n, 5, 5, W)
    acc = earlier_s[rows, cols] + model.context_within(patches.reshape(len(rows), -1), s)
    return model.slice_params(s, hyper_s[rows, cols], acc)


def decode_slice(model: IntegerEntropyModel, earlier_s, hyper_s, s: int, decode, schedule):
    """Decodes slice s step by step; `decode(σ_q, μ_q)` returns the (n, W) symbols of one step.
    -> int32 (h, w, W). `schedule` = (rows, cols, counts)."""
    h, w = hyper_s.shape[:2]
    width = model.width
    buf = np.zeros((h + 2 * _PAD, w + 2 * _PAD, width))
    out = np.zeros((h, w, width), np.int32)
    rows, cols, counts = schedule
    for t in range(len(rows)):
        r, q = rows[t, : counts[t]], cols[t, : counts[t]]
        symbols = decode(*step_params(model, buf, earlier_s, hyper_s, r, q, s))
        out[r, q] = symbols
        buf[r + _PAD, q + _PAD] = np.clip(symbols, -Y_LIMIT, Y_LIMIT)
    return out


def get_schedule(h: int, w: int, raster: bool = False):
    """(rows, cols, counts) of the wavefront (default) or raster schedule."""
    if raster:
        rows, cols = raster_schedule(h, w)
        return rows, cols, np.ones(len(rows), np.int64)
    rows, cols = wavefront_schedule(h, w)
    return rows, cols, schedule_counts(h, w)
