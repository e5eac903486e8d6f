"""Escape payloads: exact coding of symbols that fall outside a model's finite support.

Both entropy models in `svi_jax.codec.range_coding` have a finite alphabet (constriction needs
one). A symbol outside it is coded as an *escape* symbol at the edge of the alphabet, and
its distance past the edge, the *excess* e >= 0, is then coded here, in the same range-coded
stream, with an Elias-gamma-like code made of uniform models:

  v = e + 1 >= 1, n = bit_length(v) - 1;  n with Uniform(MAX_EXCESS_BITS + 1),
  then the n bits of v below its leading one, in limbs of at most 16 bits, each Uniform(2**w).

A batch of excesses is coded as "all lengths, then all limbs" so both directions are a
handful of vectorised constriction calls, however many symbols escape (an untrained model
can make nearly every symbol escape). Cost per escape: about 5.4 + n bits on top of the
escape symbol itself.
"""

from __future__ import annotations

import constriction
import numpy as np

# Excesses up to 2**40 - 2: enough for any int32 symbol against any clipped centre
# (|symbol - centre| < 2**33), with margin; larger decoded lengths mean corrupted data.
MAX_EXCESS_BITS = 40
# Limb width: constriction's Uniform needs size < 2**24; 16 keeps the arithmetic obvious.
LIMB_BITS = 16
_MAX_LIMBS = -(-MAX_EXCESS_BITS // LIMB_BITS)
_LENGTH_MODEL = constriction.stream.model.Uniform(MAX_EXCESS_BITS + 1)
_UNIFORM_FAMILY = constriction.stream.model.Uniform()

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _limb_widths(lengths: np.ndarray) -> np.ndarray:
    """(E, _MAX_LIMBS) bit widths of the mantissa limbs, 0 where a limb is absent."""
    starts = np.arange(_MAX_LIMBS, dtype=np.int64) * LIMB_BITS
    return np.clip(lengths[:, None].astype(np.int64) - starts[None, :], 0, LIMB_BITS)


def encode_excess(encoder, excess: np.ndarray) -> None:
    """Appends the excesses (int64, >= 0, < 2**MAX_EXCESS_BITS - 1) to a RangeEncoder."""
    if excess.size == 0:
        return
    values = excess.astype(np.int64) + 1
    if values.min() < 1 or values.max() >= 2**MAX_EXCESS_BITS:
        raise ValueError("escape excess out of range")  # callers bound it; this is a bug guard
    # frexp is exact for integers < 2**53: values = m * 2**k with m in [0.5, 1), so
    # k = bit_length(values). No float log2, so no platform-dependent rounding.
    _, bit_length = np.frexp(values.astype(np.float64))
    lengths = (bit_length - 1).astype(np.int32)
    encoder.encode(lengths, _LENGTH_MODEL)
    widths = _limb_widths(lengths)
    mantissa = values - (np.int64(1) << lengths.astype(np.int64))
    shifts = np.arange(_MAX_LIMBS, dtype=np.int64) * LIMB_BITS
    limbs = (mantissa[:, None] >> shifts[None, :]) & ((np.int64(1) << widths) - 1)
    present = widths > 0  # row-major: escape by escape, low limb first
    if present.any():
        sizes = (np.int64(1) << widths[present]).astype(np.int32)
        encoder.encode(limbs[present].astype(np.int32), _UNIFORM_FAMILY, sizes)


def decode_excess(decoder, count: int) -> np.ndarray:
    """Reads `count` excesses written by `encode_excess`; returns int64 >= 0."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.asarray(decoder.decode(_LENGTH_MODEL, count), dtype=np.int64)
    widths = _limb_widths(lengths)
    present = widths > 0
    limbs = np.zeros(widths.shape, dtype=np.int64)
    if present.any():
        sizes = (np.int64(1) << widths[present]).astype(np.int32)
        limbs[present] = decoder.decode(_UNIFORM_FAMILY, sizes)
    shifts = np.arange(_MAX_LIMBS, dtype=np.int64) * LIMB_BITS
    mantissa = (limbs << shifts[None, :]).sum(axis=1)
    return (np.int64(1) << lengths) + mantissa - 1


def as_int_symbols(symbols: np.ndarray) -> np.ndarray:
    """Validates integer-valued symbols in the int32 range and returns them as int64.

    Float arrays are accepted when every value is an integer (e.g. round(y) from JAX), so the
    caller need not cast; anything else is a programming error, hence ValueError.
    """
    array = np.asarray(symbols)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(np.rint(array) != array):
            raise ValueError("symbols must be finite integers (round them before coding)")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"symbols must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
        raise ValueError("symbols must lie in the int32 range")
    return array.astype(np.int64)
