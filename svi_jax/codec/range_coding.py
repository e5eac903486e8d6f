"""Host-side entropy coding (numpy in, bytes out) for the progressive SIC codec.

Runs outside jit on the host. Built on constriction's range coder (a queue: symbols are
decoded in the order they were encoded), with 32-bit words stored little-endian.

Gaussian conditional (y). Symbol s = round(y) is coded under the discretised Gaussian
P(s) ∝ Φ((s+½−μ)/σ) − Φ((s−½−μ)/σ) with a non-integer mean μ. Shifting by the integer
centre c = rint(μ) leaves every bin unchanged, so we code d = s − c under a Gaussian of
mean μ − c ∈ [−½, ½]. Its alphabet is [−R−1, R+1] with R the smallest power of two
>= 8σ, clipped to [2**4, 2**18] (a "bucket"): the tail beyond 8σ holds < 1e-15 of the mass,
so in-support symbols cost their ideal −log2 P, while the bucket keeps the alphabet small
for small σ (constriction gives every alphabet entry at least 2**-24 of the mass, which
would otherwise cost up to K·2**-24·1.44 bits per symbol for an alphabet of K entries).
Buckets are computed exactly (frexp, no log2), so encoder and decoder always agree.

Escapes. d = ±(R+1) is an escape symbol: |d| − (R+1) follows right after the chunk's
symbols in the same stream, coded by `entropy_coding_escape` (Elias-gamma-like, exact for
any int32 symbol). μ is clipped to ±2**31 first, so any finite float32 mean works.

Factorized prior (ẑ). Channel c has a table pmf[c, k] for the value offsets[c] + k. The
alphabet is [escape-below, table..., escape-above]; the escapes share the table's missing
mass 1 − Σ pmf[c] (constriction still gives them the minimum 2**-24 if it is 0). Values
outside the table escape as above. Per-channel lengths: pad rows with zeros.

Chunks. `StreamEncoder` is called repeatedly (each call a "chunk"); `StreamDecoder` must be
called with the same chunk boundaries, kinds and parameters, because a chunk's symbols are
grouped by bucket and its escape payload follows the chunk. Gaussian and factorized chunks
may share one stream, which saves the ≤ 4-byte (≈ 2 on average) flush cost of a stream.

Determinism. Equal inputs give equal bytes. Means/stds are cast to float32 first (the
decoder must be fed bit-identical float32 μ, σ — compute them by the same path on encode
and decode); constriction computes in float64 internally. Factorized tables must also be
bit-identical float64 arrays.

Errors. Bad arguments raise ValueError. Corrupt streams raise `EntropyCodingError` where
detectable: a length that is not a multiple of 4, data constriction finds invalid for the
model (most truncations and ~95% of single bit flips in our tests), decoded symbols outside
int32, a stream that does not end where the decoder's last chunk ends (`finish()`; this
misses one appended word and a few one-word truncations). Undetectable: some bit flips,
which decode silently to other symbols, and decoding with other parameters or chunking. A
container should store each stream's length and, to catch every corruption, a checksum.
"""

from __future__ import annotations

import constriction
import numpy as np

from svi_jax.codec.escapes import (
    INT32_MAX,
    INT32_MIN,
    as_int_symbols,
    decode_excess,
    encode_excess,
)

_stream = constriction.stream
# Smallest / largest bucket half-width exponent: R = 2**exp.
MIN_SUPPORT_EXP = 4
MAX_SUPPORT_EXP = 18
# The alphabet covers at least TAIL_SIGMAS·σ on each side of the centre.
TAIL_SIGMAS = 8
# Centres are clipped so s − c fits comfortably in int64 and the escape code's range.
_MAX_CENTRE = float(2**31)
_MAX_TABLE = 2**20  # constriction's 24-bit precision needs far fewer entries than 2**24

_gaussian_families: dict[int, object] = {}


class EntropyCodingError(ValueError):
    """A bitstream is corrupt, truncated, or was decoded with other parameters."""


def _gaussian_family(exp: int):
    """The QuantizedGaussian model family of bucket `exp` (alphabet [−R−1, R+1])."""
    if exp not in _gaussian_families:
        half_width = 2**exp + 1
        _gaussian_families[exp] = _stream.model.QuantizedGaussian(-half_width, half_width)
    return _gaussian_families[exp]


def _gaussian_plan(means: np.ndarray, stds: np.ndarray):
    """Flat (centre int64, fractional mean f64, std f64, bucket exponent int64) per symbol."""
    mu = np.asarray(means, dtype=np.float32).reshape(-1).astype(np.float64)
    sigma = np.asarray(stds, dtype=np.float32).reshape(-1).astype(np.float64)
    if mu.shape != sigma.shape:
        raise ValueError(f"means and stds differ in size: {mu.shape} vs {sigma.shape}")
    if not np.all(np.isfinite(mu)):
        raise ValueError("means must be finite")
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError("stds must be finite and > 0")
    mu = np.clip(mu, -_MAX_CENTRE, _MAX_CENTRE)
    centre = np.rint(mu)
    # 8·σ is exact in float64 (σ has a 24-bit mantissa); frexp gives x = m·2**e with
    # m ∈ [0.5, 1), so the smallest power of two >= x is 2**e, or 2**(e−1) when m == 0.5.
    mantissa, exponent = np.frexp(TAIL_SIGMAS * sigma)
    exponent = exponent - (mantissa == 0.5)
    exponent = np.clip(exponent, MIN_SUPPORT_EXP, MAX_SUPPORT_EXP).astype(np.int64)
    return centre.astype(np.int64), mu - centre, sigma, exponent


def _factorized_models(pmf: np.ndarray, offsets: np.ndarray):
    """Per-channel Categorical models over [escape-below, table..., escape-above]; (models,
    offsets as int64, table length K)."""
    table = np.asarray(pmf, dtype=np.float64)
    offsets = np.asarray(offsets)
    if table.ndim != 2 or table.shape[1] < 1 or table.shape[1] > _MAX_TABLE:
        raise ValueError(f"pmf must be (C, K) with 1 <= K <= {_MAX_TABLE}, got {table.shape}")
    if offsets.shape != (table.shape[0],) or offsets.dtype.kind not in "iu":
        raise ValueError(f"offsets must be an integer array of shape ({table.shape[0]},)")
    if offsets.size and (offsets.min() < INT32_MIN or offsets.max() > INT32_MAX):
        raise ValueError("offsets must lie in the int32 range")  # keeps escapes < 2**34
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError("pmf must be finite and non-negative")
    totals = table.sum(axis=1)
    if np.any(totals <= 0):
        raise ValueError("every pmf row needs positive mass")
    tail = np.clip(1.0 - totals, 0.0, None)[:, None] / 2
    rows = np.concatenate([tail, table, tail], axis=1)
    models = [_stream.model.Categorical(row, perfect=False) for row in rows]
    return models, offsets.astype(np.int64), table.shape[1]


def _check_symbols_match(symbols: np.ndarray, size: int) -> None:
    if symbols.size != size:
        raise ValueError(f"{symbols.size} symbols but {size} model parameters")


class StreamEncoder:
    """Appends chunks of symbols to one range-coded stream; `finish()` returns the bytes."""

    def __init__(self) -> None:
        self._encoder = _stream.queue.RangeEncoder()
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("stream already finished")

    def encode_gaussian(self, symbols: np.ndarray, means: np.ndarray, stds: np.ndarray) -> None:
        """Codes integer symbols (any shape) under N(means, stds) discretised to unit bins."""
        self._check_open()
        centre, frac, sigma, exponent = _gaussian_plan(means, stds)
        values = as_int_symbols(symbols).reshape(-1)
        _check_symbols_match(values, centre.size)
        offset = values - centre
        edge = (np.int64(1) << exponent) + 1
        escaped = np.abs(offset) >= edge
        coded = np.where(escaped, np.sign(offset) * edge, offset).astype(np.int32)
        for exp in np.unique(exponent):  # ascending: the decoder replays the same order
            group = exponent == exp
            self._encoder.encode(
                coded[group], _gaussian_family(int(exp)), frac[group], sigma[group]
            )
        encode_excess(self._encoder, np.abs(offset[escaped]) - edge[escaped])

    def encode_factorized(self, symbols: np.ndarray, pmf: np.ndarray, offsets: np.ndarray) -> None:
        """Codes integer symbols of shape (..., C) with per-channel tables pmf (C, K)."""
        self._check_open()
        models, offsets, size = _factorized_models(pmf, offsets)
        values = as_int_symbols(symbols)
        if values.ndim < 1 or values.shape[-1] != len(models):
            raise ValueError(f"symbols need a last axis of {len(models)} channels")
        # Channel-major order so each channel is one i.i.d. call with a concrete model.
        index = values.reshape(-1, len(models)).T - offsets[:, None]
        below, above = index < 0, index >= size
        coded = np.where(below, 0, np.where(above, size + 1, index + 1)).astype(np.int32)
        for channel, model in enumerate(models):
            self._encoder.encode(coded[channel], model)
        excess = np.where(below, -index - 1, index - size)
        encode_excess(self._encoder, excess[below | above])

    def num_bytes(self) -> int:
        """Size the stream would have if finished now."""
        return 4 * self._encoder.num_words()

    def finish(self) -> bytes:
        """Flushes the coder and returns the stream; the encoder cannot be used afterwards."""
        self._check_open()
        self._finished = True
        return self._encoder.get_compressed().astype("<u4").tobytes()


class StreamDecoder:
    """Reads chunks back in the order, shapes and parameters `StreamEncoder` wrote them."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise EntropyCodingError(f"stream length {len(data)} is not a multiple of 4 bytes")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._decoder = _stream.queue.RangeDecoder(words)
        self._finished = False

    def _decode(self, *args) -> np.ndarray:
        """Calls constriction, turning its failures on invalid data into EntropyCodingError."""
        if self._finished:
            raise RuntimeError("stream already finished")
        try:
            return np.asarray(self._decoder.decode(*args), dtype=np.int64)
        except (AssertionError, KeyError, ValueError, RuntimeError, OverflowError) as error:
            raise EntropyCodingError(f"corrupt or truncated stream: {error}") from error

    def _decode_excess(self, count: int) -> np.ndarray:
        if self._finished:
            raise RuntimeError("stream already finished")
        try:
            return decode_excess(self._decoder, count)
        except (AssertionError, KeyError, ValueError, RuntimeError, OverflowError) as error:
            raise EntropyCodingError(f"corrupt or truncated stream: {error}") from error

    def decode_gaussian(self, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
        """Decodes one chunk; returns int32 symbols with the shape of `means`."""
        centre, frac, sigma, exponent = _gaussian_plan(means, stds)
        coded = np.zeros(centre.size, dtype=np.int64)
        for exp in np.unique(exponent):
            group = exponent == exp
            coded[group] = self._decode(_gaussian_family(int(exp)), frac[group], sigma[group])
        edge = (np.int64(1) << exponent) + 1
        escaped = np.abs(coded) == edge
        excess = self._decode_excess(int(escaped.sum()))
        coded[escaped] += np.sign(coded[escaped]) * excess
        return _to_int32(centre + coded).reshape(np.shape(means))

    def decode_factorized(
        self, pmf: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Decodes one chunk of shape (..., C) written by `encode_factorized`; int32."""
        models, offsets, size = _factorized_models(pmf, offsets)
        if len(shape) < 1 or shape[-1] != len(models):
            raise ValueError(f"shape needs a last axis of {len(models)} channels")
        count = int(np.prod(shape[:-1], dtype=np.int64))
        coded = np.zeros((len(models), count), dtype=np.int64)
        if count:
            for channel, model in enumerate(models):
                coded[channel] = self._decode(model, count)
        below, above = coded == 0, coded == size + 1
        escaped = below | above
        excess = np.zeros_like(coded)
        excess[escaped] = self._decode_excess(int(escaped.sum()))
        index = np.where(below, -1 - excess, np.where(above, size + excess, coded - 1))
        values = index + offsets[:, None]
        return _to_int32(values.T).reshape(shape)

    def finish(self) -> None:
        """Checks that the stream ends here (catches most truncation, trailing data, and
        decoding fewer symbols than were written)."""
        if not self._finished and not self._decoder.maybe_exhausted():
            self._finished = True
            raise EntropyCodingError(
                "stream does not end after the last chunk: truncated, trailing bytes, "
                "or chunks/parameters that differ from the encoder's"
            )
        self._finished = True


def _to_int32(values: np.ndarray) -> np.ndarray:
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise EntropyCodingError("decoded symbol outside int32: corrupt stream or parameters")
    return values.astype(np.int32)


class GaussianStreamEncoder(StreamEncoder):
    """`StreamEncoder` with `encode` = `encode_gaussian`, for y chunks."""

    encode = StreamEncoder.encode_gaussian


class GaussianStreamDecoder(StreamDecoder):
    """`StreamDecoder` with `decode` = `decode_gaussian`, for y chunks."""

    decode = StreamDecoder.decode_gaussian


def encode_gaussian(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray) -> bytes:
    """One-shot Gaussian-conditional coding of all symbols into one stream."""
    encoder = StreamEncoder()
    encoder.encode_gaussian(symbols, means, stds)
    return encoder.finish()


def decode_gaussian(data: bytes, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Inverse of `encode_gaussian`; int32 with the shape of `means`."""
    decoder = StreamDecoder(data)
    symbols = decoder.decode_gaussian(means, stds)
    decoder.finish()
    return symbols


def encode_factorized(symbols: np.ndarray, pmf: np.ndarray, offsets: np.ndarray) -> bytes:
    """One-shot factorized-prior coding of symbols (..., C) with tables pmf (C, K)."""
    encoder = StreamEncoder()
    encoder.encode_factorized(symbols, pmf, offsets)
    return encoder.finish()


def decode_factorized(
    data: bytes, pmf: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Inverse of `encode_factorized`; int32 of the given shape."""
    decoder = StreamDecoder(data)
    symbols = decoder.decode_factorized(pmf, offsets, shape)
    decoder.finish()
    return symbols
