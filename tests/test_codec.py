"""Tests of the real progressive codec (svi_jax.codec) with configs/tiny.py.

Models: `random` = init from PRNGKey(0); `large` = the same with g_a's final LayerNorm scale
×40, an untrained model whose latents are large (most ŷ and ẑ symbols leave the coder's support
and take the escape path); `trained` = the random model after a few Adam steps
on the rate of its own latents (h_a, h_s, context, entropy parameters and the bottleneck
density; g_a/g_s frozen so the test stays fast), plus the bottleneck's aux loss, so σ fits ŷ
as in a trained codec and the quantiles move away from their init.
"""

from __future__ import annotations

import hashlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import svi_jax
from svi_jax.codec import BitstreamError, Codec, compress, decompress, info, truncate
from svi_jax.codec import format as fmt
from svi_jax.codec.tables import FRAC_BITS
from svi_jax.codec.wavefront import schedule_counts, wavefront_schedule
from svi_jax.configs import tiny
from svi_jax.nn.entropy_models import bits, gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC, flax_init_params

DATA = pathlib.Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden_tiny.sic"
GOLDEN_EXPECTED = DATA / "golden_tiny_expected.npz"
GOLDEN_KEY = 0  # the golden model: flax_init_params(build_model(tiny), PRNGKey(0))
GOLDEN_H200 = DATA / "golden_h200.npz"  # made on a GPU: benchmarks/codec_roundtrip.py's docstring


def init_tiny(config, key: int) -> dict:
    """The golden model: Flax's own draw (`flax_init_params`, svi-jax's init_params when the
    golden files were made; init_params now draws other values from the same laws)."""
    model = svi_jax.build_model(config.model)
    return flax_init_params(model, jax.random.PRNGKey(key))


def golden_image() -> np.ndarray:
    """A smooth 48x80 test picture (gradients + a disc), deterministic."""
    yy, xx = np.mgrid[0:48, 0:80].astype(np.float32)
    r = 255 * xx / 79
    g = 255 * yy / 47
    b = np.where((yy - 24) ** 2 + (xx - 40) ** 2 < 200, 220.0, 40.0)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    base = golden_image().astype(np.float32)
    up = np.kron(base, np.ones((3, 3, 1)))[:h, :w]
    up = np.pad(up, ((0, max(0, h - up.shape[0])), (0, max(0, w - up.shape[1])), (0, 0)), "edge")
    return np.clip(up + rng.normal(0, 8, up.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def config():
    return tiny.get_config()


@pytest.fixture(scope="module")
def random_params(config):
    return init_tiny(config, GOLDEN_KEY)


def _briefly_train(config, params, steps: int = 60):
    """Adam on the rate of ŷ and ẑ of one photo's fixed y (so no Swin backward pass)."""
    model = svi_jax.build_model(config.model)
    x = jnp.asarray(photo(128, 128, seed=3), jnp.float32)[None] / 255.0
    y = jax.jit(lambda p, x: model.apply({"params": p}, x, method=ProgressiveSIC.analysis))(
        params, x
    )
    y_hat = jnp.round(y)
    trainable = {
        k: params[k]
        for k in ("ha", "hs", "context_model", "entropy_parameters", "entropy_bottleneck")
    }
    opt = optax.adam(1e-2)

    def rate(t, noise):
        p = {**params, **t}
        call = lambda method, *a: model.apply({"params": p}, *a, method=method)
        z = call(ProgressiveSIC.hyper_analysis, y)
        med = call(ProgressiveSIC.z_medians)
        z_hat = jnp.round(z - med) + med
        hyper = call(ProgressiveSIC.hyper_synthesis, z + jax.lax.stop_gradient(z_hat - z))
        sigma, mu = call(ProgressiveSIC.gaussian_params, hyper, y_hat)
        lik_y = gaussian_likelihood(y_hat, mu, sigma)
        lik_z = call(ProgressiveSIC.z_likelihood, z + noise)
        return jnp.sum(bits(lik_y)) + jnp.sum(bits(lik_z)) + call(ProgressiveSIC.aux_loss)

    @jax.jit
    def step(t, state, key):
        noise = jax.random.uniform(key, (1, 2, 2, model.hyper_channels), minval=-0.5, maxval=0.5)
        updates, state = opt.update(jax.grad(rate)(t, noise), state, t)
        return optax.apply_updates(t, updates), state

    state = opt.init(trainable)
    for i in range(steps):
        trainable, state = step(trainable, state, jax.random.PRNGKey(100 + i))
    return {**params, **trainable}


@pytest.fixture(scope="module")
def codecs(config, random_params):
    trained = _briefly_train(config, random_params)
    large = dict(random_params)
    large["ga"] = dict(large["ga"])
    large["ga"]["norm"] = {**large["ga"]["norm"], "scale": large["ga"]["norm"]["scale"] * 40.0}
    return {
        "random": Codec(random_params, config),
        "large": Codec(large, config),
        "trained": Codec(trained, config),
    }


CASES = [
    ("random", (48, 80)),
    ("large", (64, 64)),
    ("large", (48, 80)),
    ("trained", (64, 64)),
    ("trained", (48, 80)),
    ("trained", (128, 192)),
]


@pytest.fixture(scope="module")
def coded(codecs):
    """(codec name, image, bytes) for every model and test size, coded once."""
    out = {}
    for name, hw in CASES:
        image = photo(*hw, seed=hw[0])
        out[name, hw] = (image, codecs[name].compress(image, seed=7))
    return out


def test_wavefront_schedule_covers_every_position_once():
    for h, w in [(1, 1), (3, 5), (4, 4), (8, 12), (5, 2)]:
        rows, cols = wavefront_schedule(h, w)
        counts = schedule_counts(h, w)
        if w >= 3:
            assert len(rows) == 3 * (h - 1) + w
        seen = [
            (int(r), int(c))
            for t in range(len(rows))
            for r, c in zip(rows[t, : counts[t]], cols[t, : counts[t]], strict=True)
        ]
        assert sorted(seen) == [(i, j) for i in range(h) for j in range(w)]
        # Every causal type-A neighbour of a position is decoded in an earlier step.
        step = {
            p: t
            for t in range(len(rows))
            for p in zip(rows[t, : counts[t]].tolist(), cols[t, : counts[t]].tolist(), strict=True)
        }
        for (i, j), t in step.items():
            for di, dj in [(0, -1), (0, -2)] + [(-a, b) for a in (1, 2) for b in range(-2, 3)]:
                if (i + di, j + dj) in step:
                    assert step[i + di, j + dj] < t


@pytest.mark.parametrize(("name", "hw"), CASES)
def test_exact_symbol_round_trip(codecs, coded, name, hw):
    codec = codecs[name]
    image, data = coded[name, hw]
    y_sym, z_sym = codec.analyze(image)
    _, z_dec, y_dec, _, level = codec.decode_symbols(data)
    assert level == 16
    np.testing.assert_array_equal(z_dec, z_sym)
    np.testing.assert_array_equal(y_dec, y_sym.astype(np.float32))


def test_large_latents_escape(codecs, coded):
    """The `large` model's symbols leave the coder's support (|ŷ − μ| past the 8σ bucket
    or beyond the ẑ table), so the exact round trip above exercised the escape path."""
    codec = codecs["large"]
    image, _ = coded["large", (48, 80)]
    y_sym, z_sym = codec.analyze(image)
    assert np.abs(y_sym).max() > 100
    tables = codec.entropy.z_tables
    assert np.any((z_sym < tables.lows) | (z_sym > tables.lows + tables.lengths - 3))


def test_integer_parameters_match_the_float_model(codecs, coded):
    """The decoder's integer (μ, σ) equal gaussian_params of the float model on the decoded
    ŷ up to the integer network's quantisation (a few 1e-3)."""
    codec = codecs["trained"]
    _, data = coded["trained", (128, 192)]
    _, z_dec, y_buf, hyper, _ = codec.decode_symbols(data)
    model, params = codec.model, codec.params
    z_hat = z_dec + np.asarray(codec.medians)
    hyper_f = model.apply({"params": params}, z_hat[None], method=ProgressiveSIC.hyper_synthesis)
    np.testing.assert_allclose(hyper, hyper_f[0], atol=5e-3 * np.abs(hyper_f).max())
    sigma_f, mu_f = model.apply(
        {"params": params}, hyper_f, jnp.asarray(y_buf)[None], method=ProgressiveSIC.gaussian_params
    )
    q = (np.asarray(hyper) * 2**FRAC_BITS).astype(np.int64)
    sigma, mu = codec.entropy.gaussian_params(q, y_buf.astype(np.int32), 16)
    for ours, ref in ((sigma, sigma_f[0]), (mu, mu_f[0])):
        ref = np.asarray(ref)
        np.testing.assert_allclose(ours / 2**FRAC_BITS, ref, atol=5e-3 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["large", "trained"])
def test_truncation_equals_level_decode(codecs, coded, name):
    codec = codecs[name]
    _, data = coded[name, (48, 80)]
    sizes = info(data)["levels"]
    for level in range(1, 17):
        cut = truncate(data, level)
        assert len(cut) == sizes[level - 1]["bytes"]
        assert info(cut)["coded_levels"] == level
        full = codec.decompress(data, level=level)
        np.testing.assert_array_equal(codec.decompress(cut), full)
        # A raw cut right after slice `level` (header untouched) decodes the same.
        raw = data[: sizes[level - 1]["bytes"]]
        np.testing.assert_array_equal(codec.decompress(raw), full)


def test_size_matches_estimate(codecs, coded):
    """Bytes of every level within 1% of the −log2 estimate, plus the fixed overhead: header,
    8 B of framing per segment and ≤ 4 B of range-coder flush per stream.

    (Symbols the model deems impossible (P < 2**-24) cost less than their clamped −log2 P,
    since the coder gives every alphabet entry at least 2**-24: hence the two-sided check.)
    """
    codec = codecs["trained"]
    image, data = coded["trained", (128, 192)]
    model, params = codec.model, codec.params
    x = jnp.asarray(image, jnp.float32)[None] / 255
    lat = jax.jit(lambda p, x: svi_jax.encode_latents(model, p, x))(params, x)
    y_bits = np.asarray(bits(gaussian_likelihood(lat.y_hat, lat.means, lat.scales)))[0]
    z_lik = model.apply({"params": params}, lat.z_hat, method=ProgressiveSIC.z_likelihood)
    z_bits = float(np.sum(bits(z_lik)))
    per_slice = y_bits.reshape(*y_bits.shape[:2], 16, -1).sum(axis=(0, 1, 3))
    levels = info(data)["levels"]
    for level in range(1, 17):
        estimate = (z_bits + per_slice[:level].sum()) / 8
        fixed = fmt.HEADER_SIZE + (level + 1) * (fmt.SEGMENT_OVERHEAD + 4)  # 4: flush
        real = levels[level - 1]["bytes"]
        assert abs(real - estimate) <= 0.01 * estimate + fixed, (level, real, estimate)
    # Stream payloads alone (no framing) track the estimate tightly too.
    payload = len(data) - fmt.HEADER_SIZE - 17 * fmt.SEGMENT_OVERHEAD
    total = (z_bits + per_slice.sum()) / 8
    assert abs(payload - total) <= 0.01 * total + 17 * 4, (payload, total)


def test_decode_deterministic_and_seeded(codecs, coded):
    codec = codecs["trained"]
    _, data = coded["trained", (64, 64)]
    a = codec.decompress(data, level=3)
    b = codec.decompress(data, level=3)
    np.testing.assert_array_equal(a, b)
    assert info(data)["seed"] == 7
    np.testing.assert_array_equal(codec.decompress(data, level=3, seed=7), a)
    other = codec.decompress(data, level=3, seed=8)
    assert not np.array_equal(other, a)
    # Level 16 samples nothing: the seed does not matter.
    np.testing.assert_array_equal(codec.decompress(data, seed=1), codec.decompress(data, seed=2))


def test_compress_fewer_levels_is_prefix(codecs, coded):
    codec = codecs["random"]
    image, data = coded["random", (48, 80)]
    four = codec.compress(image, level=4, seed=7)
    assert four == truncate(data, 4)


def test_bad_bitstreams_raise_clear_errors(codecs, coded, config, random_params):
    codec = codecs["random"]
    _, data = coded["random", (48, 80)]
    rng = np.random.RandomState(0)
    cases = {
        "empty": b"",
        "random bytes": rng.bytes(500),
        "wrong magic": b"XXXX" + data[4:],
        "future version": data[:4] + bytes([fmt.FORMAT_VERSION + 1]) + data[5:],
        "older version": data[:4] + bytes([1]) + data[5:],
        "cut in header": data[:20],
        "cut mid-slice": data[: info(data)["levels"][2]["bytes"] + 10],
        "flipped payload": data[:-3] + bytes([data[-3] ^ 0x55]) + data[-2:],
    }
    for what, bad in cases.items():
        with pytest.raises(BitstreamError) as err:
            codec.decompress(bad)
        assert "\n" not in str(err.value), what
    with pytest.raises(BitstreamError, match="format version 3 by a newer svi_jax"):
        codec.decompress(cases["future version"])
    with pytest.raises(BitstreamError, match="format version 1 by an older svi_jax"):
        codec.decompress(cases["older version"])
    with pytest.raises(BitstreamError, match="checksum mismatch in slice"):
        codec.decompress(cases["flipped payload"])
    with pytest.raises(BitstreamError, match="cut inside slice"):
        codec.decompress(cases["cut mid-slice"])
    with pytest.raises(BitstreamError, match="another model"):
        codecs["trained"].decompress(data)
    with pytest.raises(BitstreamError, match="not available"):
        codec.decompress(truncate(data, 3), level=4)


def test_intact_but_desynchronised_files_are_determinism_errors(codecs, coded):
    """Checksums intact, symbols wrong: a determinism failure naming both sides, never
    "corrupt"."""
    import dataclasses

    codec = codecs["random"]
    _, data = coded["random", (48, 80)]
    stream = fmt.parse(data)
    head, z, slices = stream.header, stream.z_segment, list(stream.slice_segments)
    swapped = [slices[1], slices[0], *slices[2:]]  # valid CRCs, decoded with other parameters
    bad_check = [dataclasses.replace(slices[0], check=slices[0].check ^ 1), *slices[1:]]
    other_digest = dataclasses.replace(head, entropy_digest=bytes(8), encoder="svi-jax 9 tpu")
    cases = {
        "swapped slices": fmt.pack(head, z, swapped),
        "symbol check": fmt.pack(head, z, bad_check),
        "z check": fmt.pack(head, dataclasses.replace(z, check=z.check ^ 1), slices),
    }
    for what, bad in cases.items():
        with pytest.raises(fmt.DeterminismError, match="not a corrupt file") as err:
            codec.decompress(bad)
        assert head.encoder in str(err.value) and codec.encoder_id in str(err.value), what
    with pytest.raises(fmt.DeterminismError, match="svi-jax 9 tpu"):
        codec.decompress(fmt.pack(other_digest, z, slices))


def _golden_codec(config):
    return Codec(init_tiny(config, GOLDEN_KEY), config)


def test_golden_bitstream(config, random_params):
    """A committed file from the fixed tiny model keeps decoding: to exactly the same symbols
    (the guarantee: integer entropy path, any backend or JAX version) and to the same pixels up
    to g_s's float rounding (±1 where another backend/XLA rounds differently; exact here).

    Regenerate (only for an intended format change): python tests/test_codec.py --regenerate
    """
    expected = np.load(GOLDEN_EXPECTED)
    data = GOLDEN.read_bytes()
    # The functional API (params, config, ...) builds a Codec per call. Re-encoding is not
    # compared byte for byte: g_a's float rounding may legitimately differ between CPUs.
    again = compress(random_params, config, golden_image(), seed=11)
    assert info(again)["levels"][-1]["bytes"] == pytest.approx(len(data), rel=0.05)
    codec = Codec(random_params, config)
    _, z_sym, y_buf, hyper, _ = codec.decode_symbols(data)
    np.testing.assert_array_equal(z_sym, expected["z_symbols"])
    np.testing.assert_array_equal(y_buf, expected["y_symbols"])
    np.testing.assert_array_equal(np.asarray(hyper), expected["hyper"])
    for level in (1, 5, 16):
        image = decompress(random_params, config, data, level=level).astype(np.int16)
        ref = expected[f"level{level}"].astype(np.int16)
        assert np.abs(image - ref).max() <= 1 and np.mean(image != ref) < 0.01, level


def test_a_file_made_on_a_gpu_decodes_here(random_params, config):
    """The GPU bug (../shared/cases/gpu-codec-roundtrip): a .sic file compressed on an NVIDIA
    H200 (jax 0.11.2, the golden model exported from this CPU) decodes here to exactly the
    symbols and entropy parameters the H200 decoded, and to its pixels within ±1 (g_s is
    float). The H200 decoded its own file in the same process too (its --save run)."""
    saved = np.load(GOLDEN_H200)
    codec = Codec(random_params, config)
    _, z_sym, y_buf, hyper, _ = codec.decode_symbols(saved["sic"].tobytes())
    np.testing.assert_array_equal(z_sym, saved["z_symbols"])
    np.testing.assert_array_equal(y_buf, saved["y_symbols"])
    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(hyper)).tobytes()).hexdigest()
    assert digest == str(saved["hyper_sha256"])
    for level in (1, 8, 16):
        image = codec.decompress(saved["sic"].tobytes(), level=level).astype(np.int16)
        assert np.abs(image - saved[f"level{level}"].astype(np.int16)).max() <= 1, level


if __name__ == "__main__":
    import sys

    if "--regenerate" in sys.argv:
        cfg = tiny.get_config()
        codec = _golden_codec(cfg)
        blob = codec.compress(golden_image(), seed=11)
        DATA.mkdir(exist_ok=True)
        GOLDEN.write_bytes(blob)
        _, z_sym, y_buf, hyper, _ = codec.decode_symbols(blob)
        arrays = {"z_symbols": z_sym, "y_symbols": y_buf, "hyper": np.asarray(hyper)}
        for lv in (1, 5, 16):
            arrays[f"level{lv}"] = codec.decompress(blob, level=lv)
        np.savez_compressed(GOLDEN_EXPECTED, **arrays)
        print(f"wrote {GOLDEN} ({len(blob)} bytes) and {GOLDEN_EXPECTED}")
