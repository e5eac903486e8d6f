"""Tests for svi_jax.codec.range_coding and tables: exact round trips with integer tables,
escapes, chunking, sizes equal to the tables' own −log2, the table rules, bad input."""

import numpy as np
import pytest
from scipy.stats import norm

from svi_jax.codec import range_coding as ec
from svi_jax.codec import tables as tb
from svi_jax.codec.escapes import decode_excess, encode_excess

INT32_EXTREMES = [-(2**31), 2**31 - 1, -(10**6), 10**6, -1000, 1000]


@pytest.fixture(scope="module")
def gauss():
    return tb.gaussian_tables()


def _draw(rng, tables, rows):
    """Values drawn from the integer rows themselves (escapes excluded)."""
    values = np.empty(len(rows), np.int64)
    for i, r in enumerate(rows):
        f = tables.row(r)[1:-1] + 1.0
        values[i] = tables.lows[r] + rng.choice(len(f), p=f / f.sum())
    return values


def _table_bits(tables, rows, values):
    """−Σ log2 of the probabilities the coder must use: (f + 1) / 2**24."""
    index = values - tables.lows[rows] + 1
    freq = np.array([tables.row(r)[i] for r, i in zip(rows, index, strict=True)])
    return float(-np.log2((freq + 1) / 2**24).sum())


def _gaussian_case(rng, gauss, n):
    sigma_q = np.exp(rng.uniform(np.log(300), np.log(2e5), n)).astype(np.int64)  # σ 0.07..50
    mu_q = rng.integers(-50 * 4096, 50 * 4096, n)
    rows, centres = gauss.rows_and_centres(sigma_q, mu_q)
    return rows, centres, _draw(rng, gauss.tables, rows) + centres


def test_rows_round_trip_with_escapes(gauss):
    rng = np.random.default_rng(0)
    rows, centres, symbols = _gaussian_case(rng, gauss, 6000)
    symbols[:: 6000 // 50] = rng.integers(-(2**31), 2**31, size=50)  # far outliers escape
    symbols[1 : 1 + len(INT32_EXTREMES)] = INT32_EXTREMES
    shape = (20, 30, 10)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(symbols.reshape(shape), rows, centres, gauss.tables)
    decoder = ec.StreamDecoder(encoder.finish())
    decoded = decoder.decode_rows(rows.reshape(shape), centres.reshape(shape), gauss.tables)
    decoder.finish()
    assert decoded.dtype == np.int32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded.reshape(-1), symbols)


def test_edges_of_every_row_and_extreme_centres(gauss):
    t = gauss.tables
    rows = np.repeat(np.arange(len(t.lengths)), 6)
    # Per row: lowest and highest in-table value, both escapes with excess 0, excess 1.
    lo, hi = t.lows[rows], t.lows[rows] + t.lengths[rows] - 3
    kind = np.tile(np.arange(6), len(t.lengths))
    values = np.choose(kind, [lo, hi, lo - 1, hi + 1, lo - 2, hi + 2])
    centres = np.where(kind % 2 == 0, 2**31 - 2**20, -(2**31) + 2**20)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(values + centres, rows, centres, t)
    decoder = ec.StreamDecoder(encoder.finish())
    np.testing.assert_array_equal(decoder.decode_rows(rows, centres, t), values + centres)
    decoder.finish()


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_stream_with_iid_first(gauss, chunk):
    rng = np.random.default_rng(2)
    rows, centres, symbols = _gaussian_case(rng, gauss, 2100)
    symbols[::97] = 10**6
    ztab, z = _iid_case(rng, channels=6, shape=(2, 3))
    encoder = ec.StreamEncoder()
    encoder.encode_iid(z, ztab)  # z first, then y chunks: one stream
    for start in range(0, len(symbols), chunk):
        part = slice(start, start + chunk)
        encoder.encode_rows(symbols[part], rows[part], centres[part], gauss.tables)
    decoder = ec.StreamDecoder(encoder.finish())
    np.testing.assert_array_equal(decoder.decode_iid(ztab, z.shape), z)
    decoded = [
        decoder.decode_rows(rows[s : s + chunk], centres[s : s + chunk], gauss.tables)
        for s in range(0, len(symbols), chunk)
    ]
    decoder.finish()
    np.testing.assert_array_equal(np.concatenate(decoded), symbols)


def _iid_case(rng, channels, shape, length=21):
    """Random integer rows of different lengths and symbols drawn from them."""
    rows, lows = [], []
    for c in range(channels):
        n = length + c % 3
        p = rng.dirichlet(np.ones(n))
        rows.append(tb.quantize_rows(p[None], np.array([n // 2]))[0])
        lows.append(int(rng.integers(-12, -5)))
    tables = tb._pack(rows, lows)
    draws = np.stack([_draw(rng, tables, np.full(int(np.prod(shape)), c)) for c in range(channels)])
    return tables, draws.T.reshape(*shape, channels).astype(np.int32)


def test_iid_round_trip_with_out_of_table_symbols():
    rng = np.random.default_rng(4)
    tables, z = _iid_case(rng, channels=16, shape=(4, 5))
    z[0, 0, :6] = INT32_EXTREMES
    z[1, 2, 3] = tables.lows[3] - 1  # just below the table
    z[1, 2, 4] = tables.lows[4] + tables.lengths[4] - 2  # just above
    encoder = ec.StreamEncoder()
    encoder.encode_iid(z, tables)
    decoder = ec.StreamDecoder(encoder.finish())
    decoded = decoder.decode_iid(tables, z.shape)
    decoder.finish()
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, z)


def test_coder_uses_exactly_the_integer_tables(gauss):
    """Bytes = −Σ log2((f + 1)/2**24) + the flush: the coder sees the integer tables and no
    other probabilities (a table off by one count in 2**10 would already show)."""
    rng = np.random.default_rng(5)
    rows, centres, symbols = _gaussian_case(rng, gauss, 30000)
    ideal = _table_bits(gauss.tables, rows, symbols - centres)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(symbols, rows, centres, gauss.tables)
    real = 8 * len(encoder.finish())
    assert ideal > 30000
    assert ideal <= real <= ideal * (1 + 1e-4) + 64, (real, ideal)


def test_gaussian_tables_follow_the_model(gauss):
    """Rows hold the discretised Gaussian of their scale and mean bin to 24-bit precision."""
    t = gauss.tables
    sigma = tb.scales()
    for j in (0, 20, 60, 100, tb.NUM_SCALES - 1):
        for b in (0, (1 << int(gauss.mu_bits[j])) - 1):
            r = gauss.row_base[j] + b
            row = t.row(r)
            assert row.min() >= 0 and row.sum() == 2**24 - len(row)
            f = (b + 0.5) / (1 << int(gauss.mu_bits[j])) - 0.5
            d = t.lows[r] + np.arange(len(row) - 2)
            p = norm.cdf((d + 0.5 - f) / sigma[j]) - norm.cdf((d - 0.5 - f) / sigma[j])
            np.testing.assert_allclose(row[1:-1] / 2**24, p, atol=len(row) * 2**-24)


def test_parameter_to_row_mapping(gauss):
    q = 1 << tb.FRAC_BITS
    thresholds = gauss.thresholds
    sigma_q = np.array([0, thresholds[0] - 1, thresholds[0], thresholds[-1], 10**12])
    rows, _ = gauss.rows_and_centres(sigma_q, np.zeros(5, np.int64))
    scale = np.searchsorted(gauss.row_base, rows, side="right") - 1
    assert list(scale) == [0, 0, 1, tb.NUM_SCALES - 1, tb.NUM_SCALES - 1]
    # μ rounds half up to the centre; the fraction picks the bin (6 bits for small σ).
    mu_q = np.array([-q // 2 - 1, -q // 2, 0, q // 2 - 1, q // 2, 5 * q + 7])
    rows, centres = gauss.rows_and_centres(np.zeros(6, np.int64), mu_q)
    assert list(centres) == [-1, 0, 0, 0, 1, 5]
    assert list(rows - gauss.row_base[0]) == [63, 0, 32, 63, 0, 32]


def test_quantize_rows_rule():
    prob = np.array([[0.25, 0.5, 0.25 + 1e-12], [0.0, 1.0, 0.0]])
    freq = tb.quantize_rows(prob, np.array([1, 1]))
    free = 2**24 - 3
    assert list(freq[0]) == [free // 4, free - 2 * (free // 4), free // 4]
    assert list(freq[1]) == [0, free, 0]
    with pytest.raises(tb.TableError):
        tb.quantize_rows(np.array([[0.9, 0.01, 0.9]]), np.array([1]))


def test_near_deterministic_symbols_cost_almost_nothing(gauss):
    n = 20000
    rows, centres = gauss.rows_and_centres(np.zeros(n, np.int64), np.arange(n) % 100 * 4096)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(centres, rows, centres, gauss.tables)
    assert len(encoder.finish()) <= 8


@pytest.mark.parametrize("values", [[0, 1, 2, 65534, 65535, 65536, 2**32, 2**40 - 2]])
def test_escape_payload_round_trip(values):
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    encode_excess(encoder, np.array(values, dtype=np.int64))
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    np.testing.assert_array_equal(decode_excess(decoder, len(values)), values)
    with pytest.raises(ValueError):
        encode_excess(encoder, np.array([2**40 - 1], dtype=np.int64))


def test_empty_inputs(gauss):
    empty = np.zeros((0, 4), np.int64)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(empty, empty, empty, gauss.tables)
    decoder = ec.StreamDecoder(encoder.finish())
    decoded = decoder.decode_rows(empty, empty, gauss.tables)
    assert decoded.shape == (0, 4) and decoded.dtype == np.int32
    tables, _ = _iid_case(np.random.default_rng(0), 3, (1,))
    encoder = ec.StreamEncoder()
    encoder.encode_iid(np.zeros((0, 3), np.int32), tables)
    assert ec.StreamDecoder(encoder.finish()).decode_iid(tables, (0, 3)).shape == (0, 3)
    assert ec.StreamEncoder().finish() == b""
    ec.StreamDecoder(b"").finish()


def test_corrupt_streams_raise_entropy_coding_error(gauss):
    rng = np.random.default_rng(8)
    rows, centres, symbols = _gaussian_case(rng, gauss, 3000)
    encoder = ec.StreamEncoder()
    encoder.encode_rows(symbols, rows, centres, gauss.tables)
    data = encoder.finish()

    def decode(blob, n=None):
        decoder = ec.StreamDecoder(blob)
        out = decoder.decode_rows(rows[:n], centres[:n], gauss.tables)  # n None: all
        decoder.finish()
        return out

    for bad in [data[:-1], data[: 4 * (len(data) // 8)], data + bytes(range(1, 9))]:
        with pytest.raises(ec.EntropyCodingError):
            decode(bad)
    with pytest.raises(ec.EntropyCodingError):  # fewer symbols than written: finish()
        decode(data, 100)
    detected = 0
    for _ in range(100):  # bit flips: not always detectable, never another exception type
        flipped = bytearray(data)
        flipped[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        try:
            decoded = decode(bytes(flipped))
        except ec.EntropyCodingError:
            detected += 1
        else:
            assert decoded.shape == symbols.shape and decoded.dtype == np.int32
    assert detected > 0


def test_bad_arguments_raise_value_error(gauss):
    t = gauss.tables
    zeros = np.zeros(4, np.int64)
    tables, _ = _iid_case(np.random.default_rng(0), 3, (1,))
    bad_calls = [
        lambda e: e.encode_rows(zeros + 0.5, zeros, zeros, t),  # not integers
        lambda e: e.encode_rows(np.full(4, 2**31), zeros, zeros, t),  # beyond int32
        lambda e: e.encode_rows(zeros[:3], zeros, zeros, t),  # size mismatch
        lambda e: e.encode_rows(zeros, zeros - 1, zeros, t),  # no such row
        lambda e: e.encode_rows(zeros, zeros, zeros[:3], t),  # centres mismatch
        lambda e: e.encode_iid(np.zeros((2, 5), np.int32), tables),  # channel count
    ]
    for call in bad_calls:
        with pytest.raises(ValueError) as info:
            call(ec.StreamEncoder())
        assert not isinstance(info.value, ec.EntropyCodingError)
