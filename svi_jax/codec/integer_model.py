"""The integer entropy model: h_s, the context model and the entropy-parameter network of the
float model (svi_jax.nn.hyperprior / context) as an integer network, so the (μ, σ) that feed
the range coder are the same bits on every backend, thread count and library version.

After Ballé, Johnston & Minnen, "Integer Networks for Data Compression with Latent-Variable
Models" (ICLR 2019), but derived *post hoc* from the trained float parameters (training is
untouched; the integer model approximates the float one, costing < 1% rate,
benchmarks/codec.py). Derivation (exact float64 operations only: frexp, ldexp, rint, so every
machine derives the same integers from the same float32 parameters):

- weights: per output channel o, e_o = 12 − exponent(max|W_o|), W_q = rint(W · 2**e_o)
  (|W_q| <= 2**12); the context kernel is masked first. Biases b_q = rint(b · 2**12).
- activations: fixed point Q12 (integer a = value · 2**12), saturated to |a| <= 2**24.
  Inputs: ẑ = clip(k · 2**12 + rint(median · 2**12)) for z symbol k; ŷ symbols clipped to
  ±2**15 (integers, Q0) before the context model.
- a layer: accumulator A_o = Σ W_q·x (exact integer), requantised to Q12 by
  Y = ⌊(A + 2**(s−1)) / 2**s⌋ with s = e_o + (input fraction bits) − 12 (round half up; s <= 0
  shifts left), then Y + b_q, saturated to ±2**24. ReLU = max(Y, 0); LeakyReLU(0.01) =
  Y for Y >= 0, else ⌊(Y · 10486 + 2**19) / 2**20⌋ (slope 10486/2**20 = 0.0100002).
- the context model's taps of earlier slices and of the own slice's decoded neighbours are one
  accumulator, requantised once (a sum of integers is the same in any grouping).

Arithmetic. Accumulations are carried out by float64 BLAS on integer values: every product and
every partial sum is an integer of magnitude <= Σ_i |W_q[i, o]| · max|x| < 2**53 (checked for
every output channel at derivation), so each float64 operation is exact, and the result is
the exact integer sum whatever the summation order, blocking, FMA use or thread count.
Everything else is int64 numpy. The inputs are only decoded integer symbols and integer
parameters, so encoder and decoder compute identical integers.

Outputs: hyper (h, w, 2C) Q12 = [σ_h | μ_h]; per latent σ_q, μ_q (Q12), which
`svi_jax.codec.tables.GaussianTables.rows_and_centres` maps to a table row and a centre.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from svi_jax.codec.tables import (
    FRAC_BITS,
    gaussian_tables,
    tables_digest,
    z_medians,
    z_tables,
)
from svi_jax.nn.context import CONTEXT_KERNEL, context_mask

ACT_LIMIT = 1 << 24  # |Q12 activation| <= 2**24 (value 4096)
WEIGHT_BITS = 12  # max |W_q| per output channel in [2**11, 2**12]
Y_LIMIT = 1 << 15  # ŷ symbols fed to the context model are clipped to ±2**15
LEAKY_MUL, LEAKY_SHIFT = 10486, 20  # LeakyReLU slope 0.01 ≈ 10486 / 2**20
EXACT_LIMIT = 1 << 53  # float64 represents every integer below this exactly
_MAX_LEFT_SHIFT = 30
_SMALL_PRODUCT = 1 << 21  # multiply-adds below which `_dot` avoids BLAS
# h_s geometry (svi_jax.nn.hyperprior.HyperSynthesis): (name, stride, padding, output
# padding, ReLU after).
HYPER_LAYERS = (
    ("deconv_0", 2, 2, 1, True),
    ("deconv_2", 2, 2, 1, True),
    ("deconv_4", 1, 1, 0, False),
)
ENTROPY_LAYERS = (("conv_0", True), ("conv_2", True), ("conv_4", False))
_PAD = CONTEXT_KERNEL // 2


class IntegerModelError(ValueError):
    """The float parameters cannot be turned into an exact integer network."""


@dataclasses.dataclass(frozen=True)
class IntLayer:
    """Integer weights (float64 holding integers, the float kernel's layout), per output
    channel requantisation shift (int64; negative = left shift) and Q12 bias (int64)."""

    weight: np.ndarray
    shift: np.ndarray
    bias: np.ndarray

    def outputs(self, start: int, stop: int) -> IntLayer:
        return IntLayer(self.weight[..., start:stop], self.shift[start:stop], self.bias[start:stop])


def quantize_layer(kernel, bias, in_frac: int, in_limit: int, name: str) -> IntLayer:
    """Float kernel (..., in, out) and bias (out,) -> IntLayer (module rules); checks that
    every accumulator stays below 2**53 for inputs of magnitude <= in_limit."""
    k = np.asarray(kernel, np.float64)
    b = np.asarray(bias, np.float64)
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(b))):
        raise IntegerModelError(f"{name}: non-finite parameters")
    out = k.shape[-1]
    maxabs = np.abs(k).reshape(-1, out).max(axis=0)
    _, exponent = np.frexp(maxabs)
    e = np.where(maxabs > 0, WEIGHT_BITS - exponent, 0).astype(np.int64)
    weight = np.rint(np.ldexp(k, e))
    shift = e + in_frac - FRAC_BITS
    bias_q = np.clip(np.rint(np.ldexp(b, FRAC_BITS)), -(2**40), 2**40).astype(np.int64)
    bound = np.abs(weight).reshape(-1, out).sum(axis=0).astype(np.int64)
    if int(bound.max(initial=0)) * in_limit >= EXACT_LIMIT or shift.min() < -_MAX_LEFT_SHIFT:
        raise IntegerModelError(
            f"{name}: weights too large for an exact integer network (53-bit accumulators)"
        )
    return IntLayer(weight, shift, bias_q)


def requantize(acc: np.ndarray, layer: IntLayer) -> np.ndarray:
    """Exact integer accumulators (float64 or int64, last axis = outputs) -> Q12 int64."""
    a = acc.astype(np.int64)
    s = layer.shift
    right = np.maximum(s, 0)
    rounded = (a + ((np.int64(1) << right) >> 1)) >> right
    shifted = np.clip(a, -ACT_LIMIT, ACT_LIMIT) << np.maximum(-s, 0)
    y = np.where(s > 0, rounded, shifted) + layer.bias
    return np.clip(y, -ACT_LIMIT, ACT_LIMIT)


def relu(y: np.ndarray) -> np.ndarray:
    return np.maximum(y, 0)


def leaky_relu(y: np.ndarray) -> np.ndarray:
    negative = (y * LEAKY_MUL + (1 << (LEAKY_SHIFT - 1))) >> LEAKY_SHIFT
    return np.where(y < 0, negative, y)


def _dot(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Integer x (..., in) times integer weight (in, out): exact (module docstring).

    Large products go to BLAS as 2-D arrays (numpy's stacked matmul does not call BLAS);
    small ones, like a wavefront step's, to einsum's own loop: a threaded BLAS can spend 100×
    the arithmetic waking its threads on a busy machine. Both give the exact integers."""
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float64)
    if flat.shape[0] * weight.size <= _SMALL_PRODUCT:
        out = np.einsum("ij,jk->ik", flat, weight)
    else:
        out = flat @ weight
    return out.reshape(*x.shape[:-1], weight.shape[-1])


def conv_transpose(x: np.ndarray, layer: IntLayer, stride: int, padding: int, out_pad: int):
    """PyTorch ConvTranspose2d semantics, out[i·stride − padding + a] += x[i] · W[a], on
    (h, w, in) integers; kernel (k, k, in, out) -> exact accumulators (H, W, out), float64."""
    h, w, cin = x.shape
    k, cout = layer.weight.shape[0], layer.weight.shape[-1]
    taps = _dot(x.reshape(h * w, cin), layer.weight.transpose(2, 0, 1, 3).reshape(cin, -1))
    taps = taps.reshape(h, w, k, k, cout)
    full = np.zeros(((h - 1) * stride + k + out_pad, (w - 1) * stride + k + out_pad, cout))
    for a in range(k):
        for b in range(k):
            full[a : a + (h - 1) * stride + 1 : stride, b : b + (w - 1) * stride + 1 : stride] += (
                taps[:, :, a, b]
            )
    out_h = (h - 1) * stride - 2 * padding + k + out_pad
    out_w = (w - 1) * stride - 2 * padding + k + out_pad
    return full[padding : padding + out_h, padding : padding + out_w]


def context_patches(y: np.ndarray) -> np.ndarray:
    """(h, w, c) -> (h, w, 5·5·c) zero-padded 5×5 neighbourhoods, in the kernel's (a, b, c)
    order, as float64."""
    h, w, c = y.shape
    padded = np.pad(y.astype(np.float64), ((_PAD, _PAD), (_PAD, _PAD), (0, 0)))
    windows = sliding_window_view(padded, (CONTEXT_KERNEL, CONTEXT_KERNEL), axis=(0, 1))
    return windows.transpose(0, 1, 3, 4, 2).reshape(h, w, -1)  # (h, w, c, a, b) -> (a, b, c)


class IntegerEntropyModel:
    """The integer entropy path of one parameter set (derived in __init__, ~1 s)."""

    def __init__(self, params: dict, num_slices: int):
        self.num_slices = num_slices
        hs = params["hs"]
        limit = ACT_LIMIT
        self.hyper_layers = [
            quantize_layer(hs[n]["kernel"], hs[n]["bias"], FRAC_BITS, limit, f"hs.{n}")
            for n, *_ in HYPER_LAYERS
        ]
        ctx = params["context_model"]
        kernel = np.asarray(ctx["kernel"], np.float64)
        self.channels = kernel.shape[2]
        self.width = self.channels // num_slices
        mask = context_mask(self.channels, num_slices).astype(np.float64)
        self.context = quantize_layer(kernel * mask, ctx["bias"], 0, Y_LIMIT, "context_model")
        ent = params["entropy_parameters"]
        self.entropy_layers = [
            quantize_layer(ent[n]["kernel"][0, 0], ent[n]["bias"], FRAC_BITS, limit, f"entropy.{n}")
            for n, _ in ENTROPY_LAYERS
        ]
        medians = z_medians(params).astype(np.float64)
        self.medians_q = np.rint(np.ldexp(medians, FRAC_BITS)).astype(np.int64)
        self.z_tables = z_tables(params)
        self.gaussian = gaussian_tables()
        self.digest = self._digest()
        self._weights: dict[tuple[int, int], np.ndarray] = {}

    def _digest(self) -> bytes:
        """sha256 of every integer the coder depends on (layers, medians, both tables)."""
        h = hashlib.sha256(f"q{FRAC_BITS} w{WEIGHT_BITS} y{Y_LIMIT} a{ACT_LIMIT}".encode())
        for layer in [*self.hyper_layers, self.context, *self.entropy_layers]:
            for a in (layer.weight.astype(np.int64), layer.shift, layer.bias):
                h.update(np.ascontiguousarray(a, "<i8").tobytes())
        h.update(np.ascontiguousarray(self.medians_q, "<i8").tobytes())
        h.update(tables_digest(self.z_tables, self.gaussian.tables))
        h.update(np.ascontiguousarray(self.gaussian.thresholds, "<i8").tobytes())
        h.update(np.ascontiguousarray(self.gaussian.row_base, "<i8").tobytes())
        h.update(np.ascontiguousarray(self.gaussian.mu_bits, "<i8").tobytes())
        return h.digest()

    # --- h_s ----------------------------------------------------------------------------
    def hyper(self, z_symbols: np.ndarray) -> np.ndarray:
        """int z symbols (h, w, C_z) -> hyper (4h, 4w, 2C) Q12 int64 = [σ_h | μ_h]."""
        k = np.asarray(z_symbols, np.int64)
        x = np.clip((k << FRAC_BITS) + self.medians_q, -ACT_LIMIT, ACT_LIMIT)
        for layer, (_, stride, pad, out_pad, act) in zip(
            self.hyper_layers, HYPER_LAYERS, strict=True
        ):
            x = requantize(conv_transpose(x, layer, stride, pad, out_pad), layer)
            if act:
                x = relu(x)
        return x

    # --- context model ------------------------------------------------------------------
    def _context_weight(self, s_in: int, first_out: int) -> np.ndarray:
        """(25·W, 2W·(S − first_out)) weights from input slice s_in to the context outputs of
        slices >= first_out (cached: contiguous copies for BLAS)."""
        key = (s_in, first_out)
        if key not in self._weights:
            w = self.width
            k = self.context.weight[:, :, s_in * w : (s_in + 1) * w, first_out * 2 * w :]
            self._weights[key] = np.ascontiguousarray(k.reshape(CONTEXT_KERNEL**2 * w, k.shape[-1]))
        return self._weights[key]

    def context_from_slice(self, y_slice: np.ndarray, s_in: int, first_out: int) -> np.ndarray:
        """Exact accumulators (h, w, 2W·(S − first_out)), float64, of ŷ slice s_in (h, w, W)
        on the context outputs of slices >= first_out (masked taps are zero weights)."""
        y = np.clip(np.asarray(y_slice, np.int64), -Y_LIMIT, Y_LIMIT)
        return _dot(context_patches(y), self._context_weight(s_in, first_out))

    def context_within(self, patches: np.ndarray, s: int) -> np.ndarray:
        """(n, 25·W) patches of slice s's partly decoded buffer -> (n, 2W) accumulators of its
        own causal taps."""
        return _dot(patches, self._context_weight(s, s)[:, : 2 * self.width])

    # --- entropy parameters -------------------------------------------------------------
    def slice_params(self, s: int, hyper_s: np.ndarray, ctx_acc: np.ndarray):
        """Group s of the entropy-parameter network: hyper_s (..., 2W) Q12 [σ_h_s | μ_h_s],
        ctx_acc (..., 2W) exact context accumulators of slice s -> (σ_q, μ_q), each
        (..., W) Q12 int64."""
        w = self.width
        ctx = requantize(ctx_acc, self.context.outputs(2 * w * s, 2 * w * (s + 1)))
        x = np.concatenate([hyper_s, ctx], axis=-1)
        for layer, (_, act) in zip(self.entropy_layers, ENTROPY_LAYERS, strict=True):
            n = layer.weight.shape[-1] // self.num_slices
            group = layer.outputs(n * s, n * (s + 1))
            x = requantize(_dot(x, group.weight), group)
            if act:
                x = leaky_relu(x)
        return x[..., :w], x[..., w:]

    def hyper_slice(self, hyper: np.ndarray, s: int) -> np.ndarray:
        """[σ_h_s | μ_h_s] (..., 2W) of hyper (..., 2C)."""
        w, c = self.width, self.channels
        return np.concatenate(
            [hyper[..., s * w : (s + 1) * w], hyper[..., c + s * w : c + (s + 1) * w]], -1
        )

    def gaussian_params(self, hyper: np.ndarray, y_symbols: np.ndarray, levels: int):
        """All positions at once (the encoder's path; identical integers to the decoder's
        wavefront): hyper (h, w, 2C), ŷ symbols (h, w, C) -> (σ_q, μ_q) (h, w, W·levels)."""
        w = self.width
        acc = np.zeros((*y_symbols.shape[:2], 2 * w * levels))
        for s_in in range(levels):
            part = self.context_from_slice(y_symbols[..., s_in * w : (s_in + 1) * w], s_in, s_in)
            acc[..., 2 * w * s_in :] += part[..., : 2 * w * (levels - s_in)]
        sigmas, mus = [], []
        for s in range(levels):
            sigma, mu = self.slice_params(
                s, self.hyper_slice(hyper, s), acc[..., 2 * w * s : 2 * w * (s + 1)]
            )
            sigmas.append(sigma)
            mus.append(mu)
        return np.concatenate(sigmas, -1), np.concatenate(mus, -1)


_CACHE: dict[tuple[str, int], IntegerEntropyModel] = {}


def derive(params: dict, num_slices: int, key: str | None = None) -> IntegerEntropyModel:
    """IntegerEntropyModel(params), remembered for the last two `key`s (the parameter hash):
    loading an export verifies its digest and the Codec then reuses the same derivation."""
    if key is None:
        return IntegerEntropyModel(params, num_slices)
    if (key, num_slices) not in _CACHE:
        while len(_CACHE) >= 2:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key, num_slices] = IntegerEntropyModel(params, num_slices)
    return _CACHE[key, num_slices]
