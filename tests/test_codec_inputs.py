"""Inputs the functional API and the codec API refuse with one clear error (not a silent
wrong result, not a shape error from deep inside the model)."""

from __future__ import annotations

import mmap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import svi_jax
from svi_jax.codec import Codec, info, truncate
from svi_jax.configs import tiny
from svi_jax.input_checks import check_level


@pytest.fixture(scope="module")
def model():
    return svi_jax.build_model(tiny.get_config().model)


@pytest.fixture(scope="module")
def abstract_params(model):
    """Parameter shapes only: the checks run at trace time, no value is ever read."""
    return jax.eval_shape(lambda k: svi_jax.init_params(model, k), jax.random.PRNGKey(0))


def _trace(model, params, x_shape, dtype=jnp.float32):
    """{entry point: a call tracing it with an image batch of `x_shape`} (no compilation)."""
    x = jax.ShapeDtypeStruct(x_shape, dtype)
    h, w = (x_shape[1] // 16, x_shape[2] // 16) if len(x_shape) == 4 else (1, 1)
    u = jax.ShapeDtypeStruct((1, max(h, 1), max(w, 1), model.latent_channels), jnp.float32)
    level = jax.ShapeDtypeStruct((), jnp.int32)
    fns = {
        "encode_latents": lambda p, x, lv, u: svi_jax.encode_latents(model, p, x),
        "evaluation_pass": lambda p, x, lv, u: svi_jax.evaluation_pass(model, p, x, lv, u),
        "train_forward": lambda p, x, lv, u: svi_jax.train_forward(model, p, x, lv, None),
    }
    return {k: (lambda f=f: jax.eval_shape(f, params, x, level, u)) for k, f in fns.items()}


@pytest.mark.parametrize("hw", [(64, 96), (80, 80), (48, 64), (70, 100)])
def test_sizes_that_are_not_multiples_of_64_name_the_rule_and_the_size(model, abstract_params, hw):
    for name, trace in _trace(model, abstract_params, (1, *hw, 3)).items():
        with pytest.raises(ValueError, match="multiples of 64") as error:
            trace()
        assert f"{hw[0]}x{hw[1]} (H x W)" in str(error.value), name
        assert "pad_to_multiple" in str(error.value)


@pytest.mark.parametrize(
    ("shape", "dtype", "kind", "what"),
    [
        ((64, 64, 3), jnp.float32, ValueError, "3 axes"),  # HWC without the batch axis
        ((1, 3, 64, 64), jnp.float32, ValueError, "NCHW"),
        ((1, 64, 64, 1), jnp.float32, ValueError, "1 channels"),
        ((1, 64, 64, 3), jnp.uint8, TypeError, "uint8"),
        ((1, 64, 64, 3), jnp.int32, TypeError, "int32"),
    ],
)
def test_other_layouts_and_dtypes_name_the_expected_layout(
    model, abstract_params, shape, dtype, kind, what
):
    for name, trace in _trace(model, abstract_params, shape, dtype).items():
        with pytest.raises(kind, match=r"NHWC float in \[0, 1\]") as error:
            trace()
        assert what in str(error.value), (name, str(error.value))


def test_the_checks_let_good_batches_through(model, abstract_params):
    for dtype in (jnp.float32, jnp.bfloat16):
        out = _trace(model, abstract_params, (2, 64, 128, 3), dtype)["encode_latents"]()
        assert out.y.shape == (2, 4, 8, model.latent_channels)


def test_pad_to_multiple_takes_a_batch():
    with pytest.raises(ValueError, match=r"x\[None\]"):
        svi_jax.pad_to_multiple(np.zeros((40, 70, 3), np.float32))
    padded, hw = svi_jax.pad_to_multiple(np.zeros((1, 40, 70, 3), np.float32))
    assert padded.shape == (1, 64, 128, 3) and hw == (40, 70)


@pytest.fixture(scope="module")
def codec(model):
    config = tiny.get_config()
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))
    return Codec(params, config)


def _image() -> np.ndarray:
    return (np.random.RandomState(0).rand(40, 70, 3) * 255).astype(np.uint8)


def test_codec_takes_uint8_images_only(codec):
    image = _image()
    for wrong in (
        image.astype(np.float32),  # 0..255 floats: were coded as a near-white image
        image.astype(np.float32) / 255.0,  # [0, 1] floats: the caller converts
        image.astype(np.int64),
        image.astype(np.uint16),
    ):
        with pytest.raises(TypeError, match=r"uint8 \(H, W, 3\)") as error:
            codec.compress(wrong)
        assert str(wrong.dtype) in str(error.value)
        with pytest.raises(TypeError, match="uint8"):
            svi_jax.codec.compress(codec, None, wrong)


def test_levels_and_seeds_are_integers(codec):
    image = _image()
    for level in (3.7, 3.0, True, "3"):
        with pytest.raises(TypeError, match="level must be an integer"):
            codec.compress(image, level=level)
    with pytest.raises(TypeError, match="seed must be an integer"):
        codec.compress(image, seed=1.5)
    data = codec.compress(image, level=np.int64(2), seed=np.uint32(5))  # numpy ints are fine
    assert info(data)["coded_levels"] == 2 and info(data)["seed"] == 5
    with pytest.raises(TypeError, match="level must be an integer"):
        truncate(data, 1.5)
    assert info(truncate(data, np.int8(1)))["coded_levels"] == 1
    with pytest.raises(TypeError, match="level must be an integer"):
        codec.decompress(data, level=1.5)
    with pytest.raises(TypeError, match="seed must be an integer"):
        codec.decompress(data, seed=0.5)


def test_paths_and_other_types_are_not_bytes(codec, tmp_path):
    """bytes(Path) used to encode the path's name ("wrong magic bytes"), bytes(str) raised
    "string argument without an encoding": every bytes-taking function says to read the file."""
    data = codec.compress(_image(), level=2)
    sic = tmp_path / "photo.sic"
    sic.write_bytes(data)
    calls = {
        "info": lambda d: info(d),
        "truncate": lambda d: truncate(d, 1),
        "decompress": lambda d: codec.decompress(d),
        "decode_symbols": lambda d: codec.decode_symbols(d),
        "module decompress": lambda d: svi_jax.codec.decompress(codec, None, d),
    }
    for name, call in calls.items():
        fn = name.split()[-1]
        for path in (sic, str(sic)):
            with pytest.raises(TypeError) as error:
                call(path)
            assert str(error.value) == (
                f"{fn} takes the file's bytes, got a path: read it first (Path(p).read_bytes())"
            ), name
        for wrong, what in ((12, "int"), ([1, 2], "list"), (None, "NoneType")):
            with pytest.raises(TypeError, match=f"{fn} takes the file's bytes, got {what}$"):
                call(wrong)
    # an array of the byte values in another dtype: its raw memory is not the file
    for dtype in (np.int64, np.int8, np.uint32):
        with pytest.raises(TypeError, match="not uint8"):
            info(np.frombuffer(data, np.uint8).astype(dtype))
    for ok in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert info(ok)["coded_levels"] == 2
    # any buffer bytes() took before the path check: an mmap of the file (the zero-copy way
    # to hand over a large .sic), and a uint8 array that is not 1-D
    with open(sic, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert info(mapped)["coded_levels"] == 2
        assert truncate(mapped, 1) == truncate(data, 1)
    assert info(np.frombuffer(data, np.uint8)[None])["coded_levels"] == 2


def test_decompress_and_truncate_word_a_bad_level_as_compress_does(codec):
    data = codec.compress(_image(), level=2)
    for level in (0, -1, 17):
        for call in (
            lambda lv: codec.compress(_image(), level=lv),
            lambda lv: codec.decompress(data, level=lv),
            lambda lv: truncate(data, lv),
        ):
            with pytest.raises(ValueError) as error:
                call(level)
            assert str(error.value) == f"level must be an integer in 1..16, got {level}"
    # a level the model has but the file lacks keeps its own message
    with pytest.raises(svi_jax.codec.BitstreamError, match="level 3 not available"):
        codec.decompress(data, level=3)


def test_codec_refuses_params_of_another_config_when_built(model):
    params = jax.eval_shape(lambda k: svi_jax.init_params(model, k), jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), params)
    for field, value, first in (
        ("latent_channels", 32, "is (48, 3, 1), the config needs (24, 3, 1)"),
        ("synthesis_heads", (8, 8, 8, 8), "relative_position_bias_table is (3, 225, 16), the "),
    ):
        config = tiny.get_config()
        config.model[field] = value
        with pytest.raises(ValueError, match="params do not fit the config: ") as error:
            Codec(params, config)
        message = str(error.value)
        assert first in message and "mismatches)" in message and "\n" not in message, message
        assert message.count(" the config needs ") <= 3  # the first few, then the count
    pruned = {k: v for k, v in params.items() if k != "hs"}
    with pytest.raises(ValueError, match=r"hs/\S+ is missing \(the config needs"):
        Codec(pruned, tiny.get_config())


def test_one_level_rule_for_the_codec_the_reader_and_the_functional_api(codec, model):
    """One helper (svi_jax.integer_checks.level_in_range): the same words from compress, a
    damaged file's reader and check_level; and the range is checked before the damage, so a
    level the model lacks is not reported as a damaged file."""
    data = codec.compress(_image(), level=2)
    cut = data[:-3]  # slice 2 cut short: levels 1..1 intact
    assert svi_jax.codec.format.parse(cut).available_levels == 1
    expected = "level must be an integer in 1..16, got 17"
    for call in (
        lambda: codec.decompress(cut, level=17),
        lambda: codec.compress(_image(), level=17),
        lambda: check_level(17, model.num_slices),
        lambda: check_level(jnp.int32(17), model.num_slices),
    ):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == expected
    with pytest.raises(svi_jax.codec.format.PartialFileError):  # in range: the damage speaks
        codec.decompress(cut, level=2)
    noise = svi_jax.draw_train_noise(model, jax.random.PRNGKey(0), (1, 64, 64, 3), jnp.int32(2))
    assert noise.detail.shape[0] == 2  # a JAX integer scalar is an integer, as for levels
