"""Integer probability tables of the range coder: ẑ's factorized prior and ŷ's Gaussians.

Every table is a *row* of integer frequencies over an alphabet
[escape below, v_lo, v_lo + 1, ..., v_hi, escape above] (values relative to a centre); the
escapes carry symbols outside [v_lo, v_hi] (`svi_jax.codec.escapes` codes how far outside).
A row of n entries has non-negative frequencies summing to 2**24 − n; the coder gives entry
i the probability (f_i + 1) / 2**24 exactly (see `range_coding`). Rounding rule, for
probabilities p_i computed in float64 with `svi_jax.codec.exact_math` (same bits everywhere):
f_i = floor(p_i · (2**24 − n)), and the remainder 2**24 − n − Σ f_i (of either sign) goes to
the row's centre entry (value 0). Everything after the float64 p_i is integer arithmetic.

ẑ (Ballé et al. 2018 factorized prior, one row per channel c): symbol k = round(z − median_c)
over [−⌈median − q_low⌉, ⌈q_high − median⌉] (learned tail quantiles, half range capped at
MAX_HALF_RANGE); p = the bottleneck's likelihood of median_c + k; each escape gets half the
missing mass 1 − Σ p. The bottleneck density is re-evaluated here with `exact_math`.

ŷ (discretised Gaussian): a fixed table of NUM_SCALES scales σ_j = 0.11 · 2**(j/12) (12 per
octave, 0.11 .. ~253) and, per scale, 2**k_j bins of the mean's fractional part f ∈ [−½, ½)
with representative f_b = (b + ½)/2**k_j − ½ (k_j = 6 for σ_j < 4, where the mean matters
most, else 3). Row (j, b) holds P(d) = Φ((d + ½ − f_b)/σ_j) − Φ((d − ½ − f_b)/σ_j) for
d ∈ [−R_j, R_j], R_j = the smallest power of two >= 8σ_j (at least 16); the escapes hold the
tails beyond. A latent with fixed-point σ_q, μ_q (Q12, from `integer_model`) uses scale
j = #{thresholds ≤ σ_q} (thresholds at σ = 0.11 · 2**((j + ½)/12), rounded up to Q12), centre
c = ⌊(μ_q + 2048) / 4096⌋ (μ rounded half up), bin b = (μ_q − 4096c + 2048) >> (12 − k_j), and
codes d = ŷ − c. These tables depend only on the format version, not on the model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib

import numpy as np

from svi_jax.codec import exact_math as em

PRECISION = 24  # constriction's default range coder: probabilities in units of 2**-24
TOTAL = 1 << PRECISION
MAX_HALF_RANGE = 1024  # cap on ẑ's per-channel half range (wider values still code: escapes)

FRAC_BITS = 12  # fixed-point fraction bits of σ_q, μ_q (shared with integer_model)
SCALE_MIN = 0.11  # = SCALE_BOUND of the float model: smaller σ are coded with 0.11
SCALES_PER_OCTAVE = 12
NUM_SCALES = 135  # σ up to 0.11 · 2**(134/12) ≈ 253 (larger σ use the last scale + escapes)
FINE_MU_BITS, COARSE_MU_BITS, FINE_BELOW = 6, 3, 4.0
TAIL_SIGMAS, MIN_HALF_WIDTH = 8, 16
_LN2 = 0.6931471805599453


class TableError(ValueError):
    """The parameters cannot define coding tables (non-finite values)."""


@dataclasses.dataclass(frozen=True)
class CodingTables:
    """Rows of integer frequencies. Row r: `lengths[r]` entries starting at `starts[r]` of
    `freqs`; entry 0 / n−1 are the escapes, entry i in between is the value lows[r] + i − 1."""

    freqs: np.ndarray  # int64, all rows concatenated
    starts: np.ndarray  # int64 (rows,)
    lengths: np.ndarray  # int64 (rows,)
    lows: np.ndarray  # int64 (rows,)

    @functools.cached_property
    def by_length(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """n -> (float64 (rows of length n, n) frequencies, local index of every row or −1)."""
        groups = {}
        for n in np.unique(self.lengths):
            rows = np.flatnonzero(self.lengths == n)
            matrix = self.freqs[self.starts[rows][:, None] + np.arange(n)[None, :]]
            local = np.full(len(self.lengths), -1, np.int64)
            local[rows] = np.arange(len(rows))
            groups[int(n)] = (matrix.astype(np.float64), local)
        return groups

    def row(self, r: int) -> np.ndarray:
        return self.freqs[self.starts[r] : self.starts[r] + self.lengths[r]]

    def update_digest(self, h) -> None:
        for a in (self.freqs, self.starts, self.lengths, self.lows):
            h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())


def quantize_rows(prob: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """float64 (m, n) probabilities -> int64 frequencies, Σ_row = 2**24 − n (module rule)."""
    m, n = prob.shape
    free = TOTAL - n
    freq = np.floor(np.clip(prob, 0.0, 1.0) * float(free)).astype(np.int64)
    remainder = free - freq.sum(axis=1)
    freq[np.arange(m), centre] += remainder
    if np.any(freq[np.arange(m), centre] < 0):
        raise TableError("probabilities do not normalise")  # Σ p > 1 by more than n/2**24
    return freq


def _pack(rows: list[np.ndarray], lows: list[int]) -> CodingTables:
    lengths = np.array([len(r) for r in rows], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return CodingTables(np.concatenate(rows), starts, lengths, np.array(lows, np.int64))


# --- ŷ: Gaussian tables -------------------------------------------------------------------
def scales() -> np.ndarray:
    """σ_j = 0.11 · 2**(j/12), float64, j = 0..NUM_SCALES−1."""
    j = np.arange(NUM_SCALES, dtype=np.float64)
    return SCALE_MIN * em.exp(j * (_LN2 / SCALES_PER_OCTAVE))


@functools.cache
def scale_thresholds() -> np.ndarray:
    """int64 (NUM_SCALES − 1,): Q12 σ_q >= thresholds[j] selects a scale index > j."""
    mid = np.arange(NUM_SCALES - 1, dtype=np.float64) + 0.5
    edges = SCALE_MIN * em.exp(mid * (_LN2 / SCALES_PER_OCTAVE))
    return np.ceil(edges * float(1 << FRAC_BITS)).astype(np.int64)


def _mu_bits(sigma: np.ndarray) -> np.ndarray:
    return np.where(sigma < FINE_BELOW, FINE_MU_BITS, COARSE_MU_BITS).astype(np.int64)


def _half_width(sigma: np.ndarray) -> np.ndarray:
    """Smallest power of two >= 8σ (frexp: exact), at least MIN_HALF_WIDTH."""
    mantissa, exponent = np.frexp(TAIL_SIGMAS * sigma)
    exponent = exponent - (mantissa == 0.5)
    return np.maximum(np.int64(1) << exponent.astype(np.int64), MIN_HALF_WIDTH)


@dataclasses.dataclass(frozen=True)
class GaussianTables:
    tables: CodingTables
    row_base: np.ndarray  # int64 (NUM_SCALES,): row of (j, b) is row_base[j] + b
    mu_bits: np.ndarray  # int64 (NUM_SCALES,)
    thresholds: np.ndarray  # int64 (NUM_SCALES − 1,)

    def rows_and_centres(self, sigma_q: np.ndarray, mu_q: np.ndarray):
        """Q12 σ, μ (int64, any shape) -> (row ids, centres), int64 (module rule)."""
        j = np.searchsorted(self.thresholds, sigma_q, side="right")
        half = np.int64(1 << (FRAC_BITS - 1))
        centre = (mu_q + half) >> FRAC_BITS
        frac = mu_q - (centre << FRAC_BITS) + half  # in [0, 4096)
        b = frac >> (FRAC_BITS - self.mu_bits[j])
        return self.row_base[j] + b, centre


@functools.cache
def gaussian_tables() -> GaussianTables:
    """The fixed ŷ tables (~1M entries, built in about a second, cached per process)."""
    sigma = scales()
    bits = _mu_bits(sigma)
    halves = _half_width(sigma)
    rows, lows, bases = [], [], []
    for j in range(NUM_SCALES):
        bases.append(len(rows))
        r, bins = int(halves[j]), 1 << int(bits[j])
        f = (np.arange(bins, dtype=np.float64) + 0.5) / float(bins) - 0.5
        d = np.arange(-r, r + 1, dtype=np.float64)
        lo = (d[None, :] - 0.5 - f[:, None]) / sigma[j]
        hi = (d[None, :] + 0.5 - f[:, None]) / sigma[j]
        inner = em.normal_cdf_difference(lo, hi)
        below = em.normal_upper_tail((r + 0.5 + f) / sigma[j])
        above = em.normal_upper_tail((r + 0.5 - f) / sigma[j])
        prob = np.concatenate([below[:, None], inner, above[:, None]], axis=1)
        freq = quantize_rows(prob, np.full(bins, r + 1))
        rows.extend(freq)
        lows.extend([-r] * bins)
    return GaussianTables(_pack(rows, lows), np.array(bases, np.int64), bits, scale_thresholds())


# --- ẑ: factorized-prior tables -----------------------------------------------------------
def _half_ranges(quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(quantiles, np.float32).reshape(-1, 3)
    if not np.all(np.isfinite(q)):
        raise TableError("entropy bottleneck quantiles are not finite")
    below = np.ceil(np.clip(q[:, 1] - q[:, 0], 0, MAX_HALF_RANGE)).astype(np.int64)
    above = np.ceil(np.clip(q[:, 2] - q[:, 1], 0, MAX_HALF_RANGE)).astype(np.int64)
    return below, above


def _logits_cumulative(bottleneck: dict, x: np.ndarray) -> np.ndarray:
    """The bottleneck's cumulative logits (EntropyBottleneck.logits_cumulative) in exact_math
    float64; x (C, N). Sums run over the (≤ 3) inputs in index order, no BLAS."""
    num_layers = len([k for k in bottleneck if k.startswith("matrix")])
    logits = x[:, None, :]  # (C, in=1, N)
    for i in range(num_layers):
        weight = em.softplus(np.asarray(bottleneck[f"matrix{i}"], np.float64))  # (C, out, in)
        acc = weight[:, :, 0:1] * logits[:, 0:1, :]
        for j in range(1, weight.shape[2]):
            acc = acc + weight[:, :, j : j + 1] * logits[:, j : j + 1, :]
        logits = acc + np.asarray(bottleneck[f"bias{i}"], np.float64)
        if f"factor{i}" in bottleneck:
            factor = em.tanh(np.asarray(bottleneck[f"factor{i}"], np.float64))
            logits = logits + factor * em.tanh(logits)
    return logits[:, 0, :]


def z_medians(params: dict) -> np.ndarray:
    """float32 (C,) medians of the bottleneck (quantiles[:, 0, 1])."""
    return np.asarray(params["entropy_bottleneck"]["quantiles"], np.float32)[:, 0, 1]


def z_tables(params: dict) -> CodingTables:
    """One row per ẑ channel: the symbol k (value relative to the median) over the learned
    quantile range, values lows[c] = −⌈median − q_low⌉ .. ⌈q_high − median⌉."""
    bottleneck = params["entropy_bottleneck"]
    below, above = _half_ranges(bottleneck["quantiles"])
    medians = z_medians(params).astype(np.float64)
    if not np.all(np.isfinite(medians)):
        raise TableError("entropy bottleneck medians are not finite")
    size = int((below + above).max()) + 1
    k = np.arange(size, dtype=np.float64)[None, :] - below[:, None].astype(np.float64)
    values = medians[:, None] + k  # (C, size)
    lower = _logits_cumulative(bottleneck, values - 0.5)
    upper = _logits_cumulative(bottleneck, values + 0.5)
    sign = -np.sign(lower + upper)
    lik = np.abs(em.sigmoid(sign * upper) - em.sigmoid(sign * lower))
    if not np.all(np.isfinite(lik)):
        raise TableError("entropy bottleneck likelihoods are not finite")
    rows, lows = [], []
    for c in range(len(below)):
        n = int(below[c] + above[c]) + 1
        p = lik[c, :n]
        total = p[0]
        for i in range(1, n):  # sequential sum: no blocked reduction
            total = total + p[i]
        tail = max(0.0, 1.0 - float(total)) / 2.0
        prob = np.concatenate([[tail], p, [tail]])[None, :]
        rows.append(quantize_rows(prob, np.array([below[c] + 1]))[0])
        lows.append(-int(below[c]))
    return _pack(rows, lows)


def tables_digest(*tables: CodingTables) -> bytes:
    h = hashlib.sha256()
    for t in tables:
        t.update_digest(h)
    return h.digest()
