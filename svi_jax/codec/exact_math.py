"""Elementary functions in float64 that give the same bits on every machine.

The integer entropy model's tables (`svi_jax.codec.tables`) are derived from the float
parameters with exp, log, tanh, the logistic sigmoid and the normal CDF. Library versions of
these (libm, numpy's SIMD loops, scipy) are accurate to an ulp or so but not *correctly
rounded*, so two machines may differ in the last bit, and a last-bit difference can move a
table entry across an integer rounding boundary. Here every function is a fixed sequence of
IEEE-754 float64 operations that are correctly rounded by the standard (+, −, ×, ÷ as separate
numpy ufunc calls, so no fused multiply-add can form), exact ones (`ldexp`, `frexp`, `rint`,
`floor`, comparisons, `where`) and literal constants. Such a sequence has one result on any
conforming hardware, with any numpy build and thread count. No reductions (`np.sum`'s
pairwise blocking is an implementation detail) and no BLAS are used.

Accuracy (checked against scipy in tests/test_integer_model.py): ~1e-15 relative for exp,
log, tanh, sigmoid; ~1e-15 absolute for the normal CDF. Only determinism matters for the
codec; accuracy only has to be good enough for 24-bit probability tables.
"""

from __future__ import annotations

import numpy as np

# Cody & Waite split of ln 2 (fdlibm's constants): k·LN2_HI is exact for |k| < 2**11.
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
INV_SQRT_2PI = 3.98942280401432702863e-01
_EXP_TERMS = 20  # Taylor terms of exp(r) for |r| <= ln2/2: error < 1e-25
_LOG_TERMS = 18  # atanh-series terms for |s| <= 0.172: error < 1e-29
_Q_SERIES_TERMS = 90  # series of Φ(x) − ½ for 0 <= x < 3
_Q_FRACTION_DEPTH = 80  # continued fraction of the Mills ratio for x >= 3
_Q_SPLIT = 3.0
_Q_MAX = 40.0  # Q(40) < 1e-300: larger arguments give 0


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def exp(x) -> np.ndarray:
    """e**x, float64; arguments are clipped to [−745, 709] (0 and ~8e307 at the ends)."""
    x = np.clip(_f64(x), -745.0, 709.0)
    k = np.rint(x * INV_LN2)
    r = (x - k * LN2_HI) - k * LN2_LO  # |r| <= ~0.35
    p = np.ones_like(r)
    for n in range(_EXP_TERMS, 0, -1):  # Horner: 1 + r/1 (1 + r/2 (1 + ...))
        p = 1.0 + (r * p) / float(n)
    return np.ldexp(p, k.astype(np.int64))


def log(x) -> np.ndarray:
    """Natural log of x > 0 (float64); x <= 0 gives −inf / nan like numpy."""
    x = _f64(x)
    safe = np.where(x > 0, x, 1.0)
    m, e = np.frexp(safe)  # safe = m·2**e, m in [0.5, 1)
    small = m < 0.70710678118654752440
    m = np.where(small, m * 2.0, m)  # m in [√½, √2)
    e = np.where(small, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = np.zeros_like(s)
    for n in range(_LOG_TERMS - 1, -1, -1):  # atanh(s)/s = Σ s**(2n) / (2n + 1)
        p = 1.0 / float(2 * n + 1) + s2 * p
    result = e * LN2_HI + (e * LN2_LO + 2.0 * s * p)
    return np.where(x > 0, result, np.where(x == 0, -np.inf, np.nan))


def softplus(x) -> np.ndarray:
    """log(1 + e**x) = max(x, 0) + log(1 + e**−|x|)."""
    x = _f64(x)
    return np.maximum(x, 0.0) + log(1.0 + exp(-np.abs(x)))


def tanh(x) -> np.ndarray:
    x = _f64(x)
    t = 1.0 - 2.0 / (exp(2.0 * np.abs(x)) + 1.0)
    return np.where(x < 0, -t, t)


def sigmoid(x) -> np.ndarray:
    """1 / (1 + e**−x), written so neither branch overflows."""
    x = _f64(x)
    e = exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def normal_pdf(x) -> np.ndarray:
    x = _f64(x)
    return INV_SQRT_2PI * exp(-0.5 * (x * x))


def normal_upper_tail(x) -> np.ndarray:
    """Q(x) = P(N(0,1) > x) for x >= 0 (negative x are treated as 0).

    x < 3: Q = ½ − φ(x)·Σ x**(2n+1)/(2n+1)!! (all terms positive, no cancellation in the sum).
    x >= 3: Q = φ(x) / (x + 1/(x + 2/(x + 3/(x + ...)))) evaluated bottom-up at a fixed depth.
    """
    x = np.clip(_f64(x), 0.0, _Q_MAX)
    out = np.zeros_like(x)
    near = x < _Q_SPLIT
    if near.any():
        v = x[near]
        v2 = v * v
        term, total = v, v
        for n in range(1, _Q_SERIES_TERMS):
            term = term * v2 / float(2 * n + 1)
            total = total + term
        out[near] = 0.5 - normal_pdf(v) * total
    far = ~near
    if far.any():
        v = x[far]
        frac = v
        for n in range(_Q_FRACTION_DEPTH, 0, -1):
            frac = v + float(n) / frac
        out[far] = normal_pdf(v) / frac
    return out


def normal_cdf_difference(a, b) -> np.ndarray:
    """Φ(b) − Φ(a) for a <= b, from upper tails on the side where the mass is small."""
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    right = a >= 0  # both edges right of 0: Q(a) − Q(b)
    left = b <= 0  # both left: Q(−b) − Q(−a)
    qa, qb = normal_upper_tail(np.abs(a)), normal_upper_tail(np.abs(b))
    straddle = (1.0 - qa) - qb  # a < 0 < b: 1 − Q(−a) − Q(b)
    return np.where(right, qa - qb, np.where(left, qb - qa, straddle))
