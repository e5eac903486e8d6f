"""The functional API's level, noise and pixel-count checks (svi_jax.input_checks): a concrete
level outside 1..S, a float / bool / non-scalar level, noise drawn for another batch or image
size, M = 0 and num_pixels <= 0 are one-line errors at trace time, not finite nonsense or NaN;
a traced level still shares one trace for every level.

Everything is traced abstractly (jax.eval_shape): no compilation, no parameter values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import svi_jax
from svi_jax.configs import tiny
from svi_jax.input_checks import check_level


@pytest.fixture(scope="module")
def setup():
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    params = jax.eval_shape(lambda k: svi_jax.init_params(model, k), jax.random.PRNGKey(0))
    lpips = svi_jax.metrics.lpips.load_lpips_params("alex")
    return config, model, params, lpips


def _noise(model, shape, m=1):
    return jax.eval_shape(
        lambda k: svi_jax.draw_train_noise(model, k, shape, m), jax.random.PRNGKey(1)
    )


def _image(b=1, h=64, w=64):
    return jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32)


def _entry_points(setup, level, noise=None, x=None, uniform=None, num_pixels=None):
    """{name: a call tracing that public function at `level`}."""
    config, model, params, lpips = setup
    x = _image() if x is None else x
    noise = _noise(model, x.shape) if noise is None else noise
    if uniform is None:
        uniform = jax.ShapeDtypeStruct((x.shape[0], 4, 4, model.latent_channels), jnp.float32)
    lik = jax.ShapeDtypeStruct((1, 4, 4, model.latent_channels), jnp.float32)
    zlik = jax.ShapeDtypeStruct((1, 1, 1, model.hyper_channels), jnp.float32)
    S = model.num_slices
    # a concrete level is closed over (a Python/numpy/JAX constant), never a traced argument
    calls = {
        "svi_loss": lambda: jax.eval_shape(
            lambda p, x, n: svi_jax.svi_loss(model, p, lpips, x, level, n, config.loss),
            params,
            x,
            noise,
        ),
        "train_forward": lambda: jax.eval_shape(
            lambda p, x, n: svi_jax.train_forward(model, p, x, level, n), params, x, noise
        ),
        "evaluation_pass": lambda: jax.eval_shape(
            lambda p, x, u: svi_jax.evaluation_pass(model, p, x, level, u, num_pixels),
            params,
            x,
            uniform,
        ),
        "level_weights": lambda: svi_jax.level_weights(config.loss, level, S),
        "rate_terms": lambda: jax.eval_shape(
            lambda a, z: svi_jax.rate_terms(a, a, z, level, S, 64 * 64), lik, zlik
        ),
        "compose_level_latent": lambda: jax.eval_shape(
            lambda a: svi_jax.compose_level_latent(a, a, level, model.slice_width), lik
        ),
    }
    return calls


@pytest.mark.parametrize("level", [0, -1, 17, 100, np.int64(0), np.int32(17), jnp.int32(0)])
def test_a_concrete_level_outside_1_to_16_is_refused_everywhere(setup, level):
    for name, call in _entry_points(setup, level).items():
        with pytest.raises(ValueError) as error:
            call()
        message = str(error.value)
        assert message == f"level must be an integer in 1..16, got {int(level)}", (name, message)


@pytest.mark.parametrize(
    ("level", "kind", "what"),
    [
        (7.5, TypeError, "7.5"),
        (7.0, TypeError, "7.0"),  # no silent int(7.0)
        (True, TypeError, "True"),
        (jnp.array([3]), ValueError, "shape (1,)"),  # a (1,)-shaped loss breaks jax.grad
        (np.array([[3]]), ValueError, "shape (1, 1)"),
        ("3", TypeError, "'3'"),
    ],
)
def test_float_bool_and_array_levels_are_refused(setup, level, kind, what):
    for name, call in _entry_points(setup, level).items():
        with pytest.raises(kind, match=r"level must be an integer in 1\.\.16") as error:
            call()
        assert what in str(error.value), (name, str(error.value))


def test_a_traced_level_is_checked_for_shape_and_dtype_only(setup):
    config, model, params, lpips = setup
    x, noise = _image(), _noise(model, (1, 64, 64, 3))
    traces = []

    def loss(p, x, n, level):
        traces.append(level)
        return svi_jax.svi_loss(model, p, lpips, x, level, n, config.loss)[0]

    f = jax.jit(loss)
    for level in (1, 9, 16):  # the level is data: one trace serves all of them
        assert f.eval_shape(params, x, noise, jnp.int32(level)).shape == ()
    assert len(traces) == 1
    many = jax.vmap(loss, in_axes=(None, None, None, 0))  # each traced level is a scalar
    assert jax.eval_shape(many, params, x, noise, jnp.arange(1, 17)).shape == (16,)
    with pytest.raises(TypeError, match="a traced float32 scalar"):
        jax.eval_shape(loss, params, x, noise, jax.ShapeDtypeStruct((), jnp.float32))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        jax.eval_shape(loss, params, x, noise, jax.ShapeDtypeStruct((1,), jnp.int32))


def test_check_level_accepts_every_level_of_the_model():
    for level in (1, 16, np.int8(4), jnp.int32(16), np.array(5)):
        check_level(level, 16)
    with pytest.raises(ValueError, match=r"1\.\.8, got 9"):
        check_level(9, 8)


def test_noise_must_match_the_batch_the_image_size_and_have_samples(setup):
    _, model, _, _ = setup
    cases = {  # (x shape, noise drawn for, M): the message names what the noise was drawn for
        "B=1 noise, B=2 x (M would be 0: NaN)": ((2, 64, 64, 3), (1, 64, 64, 3), 1, "batch 1"),
        "B=2 noise, B=1 x (M would double)": ((1, 64, 64, 3), (2, 64, 64, 3), 1, "batch 2"),
        "128x128 noise, 64x64 x": ((1, 64, 64, 3), (1, 128, 128, 3), 1, "128x128 images"),
        "M=2 for B=2, used with B=4": ((4, 64, 64, 3), (2, 64, 64, 3), 2, "with M=2"),
    }
    for name, (x_shape, drawn, m, what) in cases.items():
        noise = _noise(model, drawn, m)
        for fn in ("svi_loss", "train_forward"):
            call = _entry_points(setup, 3, noise=noise, x=_image(*x_shape[:3]))[fn]
            with pytest.raises(ValueError, match="noise was drawn for") as error:
                call()
            message = str(error.value)
            assert what in message and f"x is {x_shape}" in message, (name, message)
            assert "\n" not in message
    # M = 0 (what the warming phase draws: y and z only) has no detail row: M = 1 // 2 = 0
    # made the loss NaN; it is refused, as is anything but a TrainNoise
    for x_shape in ((1, 64, 64, 3), (2, 64, 64, 3)):
        empty = _noise(model, x_shape, 0)
        assert empty.detail.shape == (0, 4, 4, model.latent_channels)
        with pytest.raises(ValueError, match="M=0"):
            _entry_points(setup, 3, noise=empty, x=_image(*x_shape[:3]))["svi_loss"]()
    good = _noise(model, (1, 64, 64, 3))
    with pytest.raises(TypeError, match="TrainNoise"):
        _entry_points(setup, 3, noise=(good.y, good.z))["train_forward"]()
    # a mapping iterated over its keys and got a shape message; now the type is named
    for wrong in (good._asdict(), {"y": 1, "z": 2, "detail": 3}, tuple(good), list(good)):
        with pytest.raises(TypeError) as error:
            _entry_points(setup, 3, noise=wrong)["train_forward"]()
        message = str(error.value)
        assert "\n" not in message
        assert message.startswith(
            f"noise must be a TrainNoise (y, z, detail), got {type(wrong).__name__}"
        )


@pytest.mark.parametrize(("m", "kind"), [(-1, ValueError), (1.0, TypeError), (True, TypeError)])
def test_draw_train_noise_takes_a_sample_count(setup, m, kind):
    _, model, _, _ = setup
    with pytest.raises(kind, match="num_samples must be an integer >= 0"):
        svi_jax.draw_train_noise(model, jax.random.PRNGKey(0), (1, 64, 64, 3), m)


def test_evaluation_pass_checks_detail_uniform_and_num_pixels(setup):
    _, model, _, _ = setup
    c = model.latent_channels
    for shape in [(2, 5, 5, c), (2, 4, 4, 3), (0, 4, 4, c), (3, 4, 4, c), (2, 4, 4)]:
        x = _image(2)
        u = jax.ShapeDtypeStruct(shape, jnp.float32)
        with pytest.raises(ValueError, match="detail_uniform has shape") as error:
            _entry_points(setup, 3, x=x, uniform=u)["evaluation_pass"]()
        assert f"(M*2, 4, 4, {c})" in str(error.value)
    for n in (0, -5):
        with pytest.raises(ValueError, match=f"num_pixels must be positive.*got {n}"):
            _entry_points(setup, 3, num_pixels=n)["evaluation_pass"]()
    out = _entry_points(setup, 3, num_pixels=75 * 100)["evaluation_pass"]()
    assert out["x_hat"].shape == (1, 64, 64, 3)


def test_warming_loss_checks_the_images_before_anything_else(setup):
    _, model, params, lpips = setup
    noise = _noise(model, (1, 64, 64, 3))

    def warm(x, n):
        return jax.eval_shape(
            lambda p, x, y, z: svi_jax.warming_loss(model, p, lpips, x, y, z), params, x, n.y, n.z
        )

    with pytest.raises(ValueError, match=r"NHWC float in \[0, 1\].*3 axes"):
        warm(jax.ShapeDtypeStruct((64, 64, 3), jnp.float32), noise)  # x[0]: HWC
    with pytest.raises(ValueError, match=r"noise_y \(1, 4, 4, 64\).*do not fit x \(2, 64, 64, 3\)"):
        warm(_image(2), noise)
    loss, _ = warm(_image(1), noise)
    assert loss.shape == ()


@pytest.mark.parametrize("phase", ["main", "gan"])
def test_a_model_with_more_than_16_levels_traces_every_phase(phase):
    """The level weights are checked against the model's S, not 16: the GAN step's syntactic
    weight takes level S concretely (it raised at trace for S > 16 with a default of 16)."""
    from svi_jax.metrics.lpips import load_lpips_params
    from svi_jax.training import steps

    config = tiny.get_config()
    config.phase = phase
    config.model.num_slices = 32  # 64 channels: 32 slices of 2
    model = svi_jax.build_model(config.model)
    state = jax.eval_shape(lambda: steps.init_state(config, model, jax.random.PRNGKey(0)))
    step_fn = steps.make_step_fn(config, model, load_lpips_params("alex"))
    batch = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    _, metrics = jax.eval_shape(step_fn, state, batch)
    assert metrics["loss"].shape == ()
    with pytest.raises(TypeError):  # no silent default of 16
        svi_jax.level_weights(config.loss, 20)
    lam, _, _ = svi_jax.level_weights(config.loss, 20, model.num_slices)
    assert float(lam) == 20 * config.loss.mse_scale
