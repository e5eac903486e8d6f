"""Host-side range coding with integer probability tables (numpy in, bytes out).

Runs outside jit on the host, on constriction's range coder (a queue: symbols are decoded in
the order they were encoded), 32-bit words stored little-endian.

Models. Every symbol is coded under one *row* of a `svi_jax.codec.tables.CodingTables`: n
integer frequencies f_0..f_{n−1} with Σ f = 2**24 − n. constriction's `Categorical` model with
`perfect=False` quantises a float table p by CDF_i = ⌊(Σ_{k<i} p_k) · (2**24 − n)/Σ p⌋ + i
(`fast_quantized_cdf` in constriction's categorical models); fed the integers f (exact in
float32/float64 and in every partial sum, as all are < 2**24), the scale is exactly 1.0 and
the coder's CDF is exactly Σ_{k<i} (f_k + 1): the probabilities that reach the coder are the
integer tables, bit for bit, on every machine. No float parameter reaches constriction.

Symbols. A symbol s with centre c is the value v = s − c. Entry 0 of a row is the escape
below, entries 1..n−2 the values lows[r] .. lows[r] + n − 3, entry n−1 the escape above.
An escaped value's distance past its escape value (lows − 1 below, lows + n − 2 above) is
coded right after the chunk's symbols by `svi_jax.codec.escapes` (exact for any int32).

Chunks. `encode_rows` / `decode_rows` code one chunk: its symbols grouped by row length
(ascending), one constriction call per group, then the chunk's escape payload. The decoder
must replay the same chunks with the same rows and centres. `encode_iid` / `decode_iid` code
(N, C) symbols with row c for channel c (ẑ), channel by channel.

Errors. Bad arguments raise ValueError. Data that cannot be decoded raises
`EntropyCodingError`: a length that is not a multiple of 4, data constriction finds invalid,
decoded symbols outside int32, a stream that does not end where the last chunk ends
(`finish()`). A stream decoded with other rows than it was written with often, but not always,
fails; the container (`format`) carries checksums to tell the two causes apart.
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
from svi_jax.codec.tables import CodingTables

_stream = constriction.stream
_FAMILY = _stream.model.Categorical(perfect=False)
_DECODE_ERRORS = (AssertionError, KeyError, ValueError, RuntimeError, OverflowError)


class EntropyCodingError(ValueError):
    """A bitstream is corrupt, truncated, or was decoded with other parameters."""


def _row_plan(tables: CodingTables, rows: np.ndarray, centres: np.ndarray):
    rows = np.asarray(rows, np.int64).reshape(-1)
    centres = np.asarray(centres, np.int64).reshape(-1)
    if rows.shape != centres.shape:
        raise ValueError(f"rows and centres differ in size: {rows.shape} vs {centres.shape}")
    if rows.size and (rows.min() < 0 or rows.max() >= len(tables.lengths)):
        raise ValueError("row index outside the table")
    if centres.size and np.abs(centres).max() > 2**31:
        raise ValueError("centres must lie within ±2**31")
    return rows, centres, tables.lows[rows], tables.lengths[rows]


def _split(values: np.ndarray, lows: np.ndarray, lengths: np.ndarray):
    """values -> (coded entry index, escaped mask, excess of the escaped values)."""
    index = values - lows + 1
    below, above = index < 1, index > lengths - 2
    coded = np.where(below, 0, np.where(above, lengths - 1, index))
    excess = np.where(below, lows - 1 - values, values - (lows + lengths - 2))
    escaped = below | above
    return coded.astype(np.int32), escaped, excess[escaped]


def _join(coded: np.ndarray, excess: np.ndarray, lows: np.ndarray, lengths: np.ndarray):
    below, above = coded == 0, coded == lengths - 1
    extra = np.zeros_like(coded)
    extra[below | above] = excess
    return np.where(
        below, lows - 1 - extra, np.where(above, lows + lengths - 2 + extra, lows + coded - 1)
    )


def _iid_models(tables: CodingTables) -> list:
    return [
        _stream.model.Categorical(tables.row(r).astype(np.float64), perfect=False)
        for r in range(len(tables.lengths))
    ]


class StreamEncoder:
    """Appends chunks of symbols to one range-coded stream; `finish()` returns the bytes."""

    def __init__(self) -> None:
        self._encoder = _stream.queue.RangeEncoder()
        self._finished = False

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("stream already finished")

    def encode_rows(self, symbols, rows, centres, tables: CodingTables) -> None:
        """Codes integer symbols (any shape; flattened) under tables rows `rows` at centres."""
        self._check_open()
        rows, centres, lows, lengths = _row_plan(tables, rows, centres)
        values = as_int_symbols(symbols).reshape(-1)
        if values.size != rows.size:
            raise ValueError(f"{values.size} symbols but {rows.size} rows")
        coded, escaped, excess = _split(values - centres, lows, lengths)
        for n in np.unique(lengths):  # ascending: the decoder replays the same order
            group = lengths == n
            matrix, local = tables.by_length[int(n)]
            self._encoder.encode(coded[group], _FAMILY, matrix[local[rows[group]]])
        encode_excess(self._encoder, excess)

    def encode_iid(self, symbols, tables: CodingTables) -> None:
        """Codes (..., C) symbols, channel c under row c (values relative to centre 0)."""
        self._check_open()
        values = as_int_symbols(symbols)
        channels = len(tables.lengths)
        if values.ndim < 1 or values.shape[-1] != channels:
            raise ValueError(f"symbols need a last axis of {channels} channels")
        values = values.reshape(-1, channels).T  # channel-major
        lows, lengths = tables.lows[:, None], tables.lengths[:, None]
        coded, escaped, excess = _split(values, lows, lengths)
        for channel, model in enumerate(_iid_models(tables)):
            self._encoder.encode(coded[channel], model)
        encode_excess(self._encoder, excess)

    def num_bytes(self) -> int:
        """Size the stream would have if finished now."""
        return 4 * self._encoder.num_words()

    def finish(self) -> bytes:
        """Flushes the coder and returns the stream; the encoder cannot be used afterwards."""
        self._check_open()
        self._finished = True
        return self._encoder.get_compressed().astype("<u4").tobytes()


class StreamDecoder:
    """Reads chunks back in the order, rows and centres `StreamEncoder` wrote them."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise EntropyCodingError(f"stream length {len(data)} is not a multiple of 4 bytes")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._decoder = _stream.queue.RangeDecoder(words)
        self._finished = False

    def _call(self, fn, *args) -> np.ndarray:
        """Calls constriction, turning its failures on invalid data into EntropyCodingError."""
        if self._finished:
            raise RuntimeError("stream already finished")
        try:
            return np.asarray(fn(*args), dtype=np.int64)
        except _DECODE_ERRORS as error:
            raise EntropyCodingError(f"corrupt or truncated stream: {error}") from error

    def decode_rows(self, rows, centres, tables: CodingTables) -> np.ndarray:
        """Decodes one chunk; int32 symbols with the shape of `rows`."""
        shape = np.shape(rows)
        rows, centres, lows, lengths = _row_plan(tables, rows, centres)
        coded = np.zeros(rows.size, np.int64)
        for n in np.unique(lengths):
            group = lengths == n
            matrix, local = tables.by_length[int(n)]
            coded[group] = self._call(self._decoder.decode, _FAMILY, matrix[local[rows[group]]])
        escaped = (coded == 0) | (coded == lengths - 1)
        excess = self._call(decode_excess, self._decoder, int(escaped.sum()))
        return _to_int32(_join(coded, excess, lows, lengths) + centres).reshape(shape)

    def decode_iid(self, tables: CodingTables, shape: tuple[int, ...]) -> np.ndarray:
        """Decodes (..., C) symbols written by `encode_iid`; int32 of the given shape."""
        channels = len(tables.lengths)
        if len(shape) < 1 or shape[-1] != channels:
            raise ValueError(f"shape needs a last axis of {channels} channels")
        count = int(np.prod(shape[:-1], dtype=np.int64))
        coded = np.zeros((channels, count), np.int64)
        if count:
            for channel, model in enumerate(_iid_models(tables)):
                coded[channel] = self._call(self._decoder.decode, model, count)
        lows, lengths = tables.lows[:, None], tables.lengths[:, None]
        escaped = (coded == 0) | (coded == lengths - 1)
        excess = self._call(decode_excess, self._decoder, int(escaped.sum()))
        return _to_int32(_join(coded, excess, lows, lengths).T).reshape(shape)

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
