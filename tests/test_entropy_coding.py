"""Tests for svi_jax.codec.range_coding: exact round trips, escapes, chunking, sizes, bad input."""

import numpy as np
import pytest
from scipy.stats import norm

from svi_jax.codec import range_coding as ec
from svi_jax.codec.escapes import decode_excess, encode_excess

INT32_EXTREMES = [-(2**31), 2**31 - 1, -(10**6), 10**6, -1000, 1000]


def _gaussian_case(rng, n, mean_range=50.0, std_range=(0.11, 20.0)):
    """Non-integer means, log-uniform stds, symbols round(y) drawn from the model."""
    means = rng.uniform(-mean_range, mean_range, n).astype(np.float32)
    low, high = np.log(std_range[0]), np.log(std_range[1])
    stds = np.exp(rng.uniform(low, high, n)).astype(np.float32)
    symbols = np.rint(means + stds * rng.standard_normal(n)).astype(np.int32)
    return symbols, means, stds


def _ideal_bits(symbols, means, stds):
    """−Σ log2 P(s) under the discretised Gaussian, in float64 via scipy."""
    mu, sigma = means.astype(np.float64), stds.astype(np.float64)
    upper = (symbols + 0.5 - mu) / sigma
    lower = (symbols - 0.5 - mu) / sigma
    # Differences of survival functions on the right keep precision in the upper tail.
    prob = np.where(lower > 0, norm.sf(lower) - norm.sf(upper), norm.cdf(upper) - norm.cdf(lower))
    return float(-np.log2(prob).sum())


def test_gaussian_round_trip_with_escapes():
    rng = np.random.default_rng(0)
    symbols, means, stds = _gaussian_case(rng, 6000)
    symbols[:: 6000 // 50] = rng.integers(-(2**31), 2**31, size=50)  # far outliers escape
    symbols[1 : 1 + len(INT32_EXTREMES)] = INT32_EXTREMES
    shape = (20, 30, 10)
    data = ec.encode_gaussian(symbols.reshape(shape), means.reshape(shape), stds.reshape(shape))
    decoded = ec.decode_gaussian(data, means.reshape(shape), stds.reshape(shape))
    assert decoded.dtype == np.int32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded.reshape(-1), symbols)


@pytest.mark.parametrize("std", [0.11, 1e4, 1e6])
def test_gaussian_sigma_extremes(std):
    rng = np.random.default_rng(1)
    n = 3000
    means = rng.uniform(-3000, 3000, n).astype(np.float32)
    stds = np.full(n, std, dtype=np.float32)
    symbols = np.rint(means + std * rng.standard_normal(n)).astype(np.int64)
    symbols[::7] = rng.choice(INT32_EXTREMES, size=len(symbols[::7]))
    symbols = np.clip(symbols, -(2**31), 2**31 - 1).astype(np.int32)
    data = ec.encode_gaussian(symbols, means, stds)
    np.testing.assert_array_equal(ec.decode_gaussian(data, means, stds), symbols)


def test_gaussian_edge_of_support_and_extreme_means():
    # σ = 2 makes 8σ = 16 exactly (bucket R = 16): offsets around ±R, ±(R+1) hit the
    # boundary between in-alphabet symbols, escape symbols and escapes with excess 0, 1.
    offsets = np.arange(-40, 41)
    stds = np.concatenate(
        [np.full(81, 2.0), np.full(81, np.nextafter(np.float32(2), np.float32(3)))]
    )
    means = np.full(162, 0.3, dtype=np.float32)
    symbols = np.concatenate([offsets, offsets]).astype(np.int32)
    # Means beyond int32 (centre clipped) and at half-integers (rint ties).
    means = np.concatenate([means, [3e38, -3e38, 2.5, -0.5, 1e9]]).astype(np.float32)
    stds = np.concatenate([stds, [0.11, 0.11, 0.11, 0.11, 5.0]]).astype(np.float32)
    symbols = np.concatenate([symbols, [2**31 - 1, -(2**31), 2, 0, -7]]).astype(np.int32)
    data = ec.encode_gaussian(symbols, means, stds)
    np.testing.assert_array_equal(ec.decode_gaussian(data, means, stds), symbols)
    # The alphabet half-width is the smallest power of two >= 8σ (at least 16).
    buckets = ec._gaussian_plan(means, stds)[3]
    assert list(buckets[[0, 81, 162, 166]]) == [4, 5, 4, 6]


@pytest.mark.parametrize("chunk", [1, 7, 32, 1000])
def test_chunked_stream_round_trip(chunk):
    rng = np.random.default_rng(2)
    symbols, means, stds = _gaussian_case(rng, 2100)
    symbols[::97] = 10**6
    pmf, table_offsets, z = _factorized_case(rng, channels=6, length=21, shape=(2, 3))
    encoder = ec.StreamEncoder()
    encoder.encode_factorized(z, pmf, table_offsets)  # z first, then y chunks: one stream
    for start in range(0, len(symbols), chunk):
        part = slice(start, start + chunk)
        encoder.encode_gaussian(symbols[part], means[part], stds[part])
    data = encoder.finish()
    decoder = ec.StreamDecoder(data)
    np.testing.assert_array_equal(decoder.decode_factorized(pmf, table_offsets, z.shape), z)
    decoded = [
        decoder.decode_gaussian(means[start : start + chunk], stds[start : start + chunk])
        for start in range(0, len(symbols), chunk)
    ]
    decoder.finish()
    np.testing.assert_array_equal(np.concatenate(decoded), symbols)


def test_gaussian_stream_aliases():
    rng = np.random.default_rng(3)
    symbols, means, stds = _gaussian_case(rng, 64)
    encoder = ec.GaussianStreamEncoder()
    encoder.encode(symbols[:40], means[:40], stds[:40])
    encoder.encode(symbols[40:], means[40:], stds[40:])
    decoder = ec.GaussianStreamDecoder(encoder.finish())
    decoded = np.concatenate(
        [decoder.decode(means[:40], stds[:40]), decoder.decode(means[40:], stds[40:])]
    )
    decoder.finish()
    np.testing.assert_array_equal(decoded, symbols)


def _factorized_case(rng, channels, length, shape):
    """Random tables with zero-padded rows, and symbols drawn from them (relative values)."""
    pmf = rng.dirichlet(np.ones(length), size=channels)
    pmf[0, length // 2 :] = 0.0  # a shorter table padded with zeros
    pmf /= pmf.sum(axis=1, keepdims=True)
    pmf *= 1 - 2e-9  # the model's tail mass
    offsets = -np.full(channels, length // 2, dtype=np.int64) + rng.integers(-2, 3, channels)
    draws = np.stack([rng.choice(length, size=shape, p=row / row.sum()) for row in pmf], -1)
    return pmf, offsets, (draws + offsets).astype(np.int32)


def test_factorized_round_trip_with_out_of_table_symbols():
    rng = np.random.default_rng(4)
    pmf, offsets, z = _factorized_case(rng, channels=16, length=33, shape=(4, 5))
    z[0, 0, :6] = INT32_EXTREMES
    z[1, 2, 3] = offsets[3] - 1  # just below the table
    z[1, 2, 4] = offsets[4] + 33  # just above the table
    z[2, 2, 0] = offsets[0] + 30  # inside the table, on a zero-padded entry
    data = ec.encode_factorized(z, pmf, offsets)
    decoded = ec.decode_factorized(data, pmf, offsets, z.shape)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, z)
    # A table that sums to exactly 1 leaves no tail mass: escapes must still work.
    exact = pmf / pmf.sum(axis=1, keepdims=True)
    data = ec.encode_factorized(z, exact, offsets)
    np.testing.assert_array_equal(ec.decode_factorized(data, exact, offsets, z.shape), z)


def test_gaussian_size_close_to_ideal():
    rng = np.random.default_rng(5)
    symbols, means, stds = _gaussian_case(rng, 30000, std_range=(0.11, 50.0))
    ideal = _ideal_bits(symbols, means, stds)
    real = 8 * len(ec.encode_gaussian(symbols, means, stds))
    assert ideal > 30000  # a meaningful amount of information
    assert 0.99 * ideal <= real <= 1.01 * ideal + 64, (real, ideal)


def test_near_deterministic_symbols_cost_almost_nothing():
    # σ = 0.11 with integer means: ideal ≈ 20k · 8e-6 bits. A wide fixed alphabet would
    # spend ~0.045 bits per symbol (≈ 110 bytes) on constriction's minimum probabilities.
    n = 20000
    means = np.arange(n, dtype=np.float32) % 100 - 50
    stds = np.full(n, 0.11, dtype=np.float32)
    symbols = means.astype(np.int32)
    assert len(ec.encode_gaussian(symbols, means, stds)) <= 8


def test_factorized_size_close_to_ideal():
    rng = np.random.default_rng(6)
    pmf, offsets, z = _factorized_case(rng, channels=32, length=41, shape=(25, 25))
    index = (z - offsets).reshape(-1, 32)
    ideal = float(-np.log2(pmf[np.arange(32)[None, :], index]).sum())
    real = 8 * len(ec.encode_factorized(z, pmf, offsets))
    assert ideal > 20000
    assert 0.99 * ideal <= real <= 1.01 * ideal + 64, (real, ideal)


def test_factorized_escape_probability_is_the_tail_mass():
    # Rows summing to 0.5 leave 0.25 to each escape entry: a symbol just above the table
    # costs 2 bits plus the excess length, log2(41) bits (its excess 0 has no mantissa).
    pmf, offsets = np.full((4, 10), 0.05), np.arange(4, dtype=np.int64)
    z = np.tile(offsets + 10, (2000, 1)).astype(np.int32)
    data = ec.encode_factorized(z, pmf, offsets)
    np.testing.assert_array_equal(ec.decode_factorized(data, pmf, offsets, z.shape), z)
    ideal = z.size * (2 + np.log2(41))
    assert 0.99 * ideal <= 8 * len(data) <= 1.01 * ideal + 64, (8 * len(data), ideal)


def test_deterministic_bytes_and_float32_inputs():
    rng = np.random.default_rng(7)
    symbols, means, stds = _gaussian_case(rng, 500)
    first = ec.encode_gaussian(symbols, means, stds)
    assert first == ec.encode_gaussian(symbols.copy(), means.copy(), stds.copy())
    # float64 parameters are cast to float32: the same float32 values give the same bytes,
    # and float symbols holding integers are accepted.
    # The relative nudge of 1e-8 is below float32's half-ulp, so it rounds away.
    nudged = means.astype(np.float64) * (1 + 1e-8)
    assert np.array_equal(nudged.astype(np.float32), means)
    wide = ec.encode_gaussian(symbols.astype(np.float64), nudged, stds.astype(np.float64))
    assert wide == first


@pytest.mark.parametrize("values", [[0, 1, 2, 65534, 65535, 65536, 2**32, 2**40 - 2]])
def test_escape_payload_round_trip(values):
    import constriction

    encoder = constriction.stream.queue.RangeEncoder()
    encode_excess(encoder, np.array(values, dtype=np.int64))
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    np.testing.assert_array_equal(decode_excess(decoder, len(values)), values)
    with pytest.raises(ValueError):
        encode_excess(encoder, np.array([2**40 - 1], dtype=np.int64))


def test_empty_inputs():
    empty = np.zeros((0, 4), dtype=np.float32)
    data = ec.encode_gaussian(empty.astype(np.int32), empty, empty + 1)
    decoded = ec.decode_gaussian(data, empty, empty + 1)
    assert decoded.shape == (0, 4) and decoded.dtype == np.int32
    pmf, offsets = np.full((3, 5), 0.2), np.zeros(3, dtype=np.int64)
    data = ec.encode_factorized(np.zeros((0, 3), np.int32), pmf, offsets)
    assert ec.decode_factorized(data, pmf, offsets, (0, 3)).shape == (0, 3)
    assert ec.StreamEncoder().finish() == b""
    ec.StreamDecoder(b"").finish()


def test_corrupt_streams_raise_entropy_coding_error():
    rng = np.random.default_rng(8)
    symbols, means, stds = _gaussian_case(rng, 3000)
    data = ec.encode_gaussian(symbols, means, stds)
    # Not whole words; half the words; two appended words (one is not always detectable).
    bad_inputs = [data[:-1], data[: 4 * (len(data) // 8)], data + bytes(range(1, 9))]
    for bad in bad_inputs:
        with pytest.raises(ec.EntropyCodingError):
            ec.decode_gaussian(bad, means, stds)
    # Reading fewer symbols than were written is caught by finish().
    decoder = ec.StreamDecoder(data)
    decoder.decode_gaussian(means[:100], stds[:100])
    with pytest.raises(ec.EntropyCodingError):
        decoder.finish()
    # Bit flips are not always detectable, but must never leak another exception type.
    detected = 0
    for _ in range(100):
        flipped = bytearray(data)
        flipped[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        try:
            decoded = ec.decode_gaussian(bytes(flipped), means, stds)
        except ec.EntropyCodingError:
            detected += 1
        else:
            assert decoded.shape == symbols.shape and decoded.dtype == np.int32
    assert detected > 0


def test_bad_arguments_raise_value_error():
    ones = np.ones(4, dtype=np.float32)
    symbols = np.zeros(4, dtype=np.int32)
    bad_calls = [
        lambda: ec.encode_gaussian(symbols, ones, ones * 0),  # σ = 0
        lambda: ec.encode_gaussian(symbols, ones * np.nan, ones),  # NaN mean
        lambda: ec.encode_gaussian(symbols + 0.5, ones, ones),  # not integers
        lambda: ec.encode_gaussian(np.full(4, 2**31, np.int64), ones, ones),  # beyond int32
        lambda: ec.encode_gaussian(symbols[:3], ones, ones),  # size mismatch
        lambda: ec.encode_factorized(
            np.zeros((2, 3), np.int32), -np.ones((3, 4)), np.zeros(3, int)
        ),
        lambda: ec.encode_factorized(np.zeros((2, 3), np.int32), np.ones((3, 4)), np.zeros(3)),
        lambda: ec.encode_factorized(np.zeros((2, 5), np.int32), np.ones((3, 4)), np.zeros(3, int)),
    ]
    for call in bad_calls:
        with pytest.raises(ValueError) as info:
            call()
        assert not isinstance(info.value, ec.EntropyCodingError)
