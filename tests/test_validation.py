"""The training loop's validation pass compiles once per padded shape, not once per image size.

Images of 100x75 and 120x90 px both pad to 128x128 (`pad_to_multiple`); their original size
enters the model pass as data (a pixel mask for MSE, a traced pixel count for bpp), so the
second image reuses the first one's compilation. Only the small LPIPS jit keeps a static crop.
The numbers are those of the definitions: MSE over the original pixels, bpp over the original
area (evaluation_pass with num_pixels = H*W).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svi_jax.configs import tiny
from svi_jax.forward import evaluation_pass, latent_shapes, pad_to_multiple
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.model import build_model, init_params
from svi_jax.training.validation import Validator

LEVEL = 5


@pytest.fixture(scope="module")
def setup():
    config = tiny.get_config()
    model = build_model(config.model)
    params = init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    images = [
        ("wide", rng.random((100, 75, 3), np.float32)),
        ("other", rng.random((120, 90, 3), np.float32)),
    ]
    return config, model, params, Validator(config, model, load_lpips_params("alex"), images)


def test_one_compilation_serves_every_image_size_of_a_padded_shape(setup, caplog):
    _, _, params, validator = setup
    with caplog.at_level(logging.INFO, logger="svi_jax.training.validation"):
        for _, image in validator.images:
            validator._one(params, image, LEVEL)
        validator._one(params, validator.images[0][1], LEVEL + 1)  # the level is data too
    traces = [r.getMessage() for r in caplog.records]
    passes = [t for t in traces if t.startswith("tracing the validation pass")]
    assert passes == ["tracing the validation pass for (1, 128, 128, 3)"], traces
    assert len([t for t in traces if "validation LPIPS" in t]) == 2  # static crop: per size


def test_metrics_are_measured_on_the_original_pixels(setup):
    config, model, params, validator = setup
    image = validator.images[0][1]
    metrics, x_hat = validator._one(params, image, LEVEL)
    h, w = image.shape[:2]
    assert config.train.val_samples == 1  # x_hat holds every sample measured
    expected_mse = np.mean((np.asarray(x_hat[0, :h, :w]) - image) ** 2)
    np.testing.assert_allclose(float(metrics["mse"]), expected_mse, rtol=1e-5)

    x, _ = pad_to_multiple(jnp.asarray(image)[None])
    key = jax.random.fold_in(validator.key, LEVEL)
    y_shape, _ = latent_shapes(model, x.shape)
    u = jax.random.uniform(key, y_shape)
    rates = jax.jit(
        lambda p, x, u: evaluation_pass(model, p, x, jnp.int32(LEVEL), u, num_pixels=h * w)
    )(params, x, u)["rates"]
    np.testing.assert_allclose(float(metrics["bpp"]), float(rates.bpp_ys + rates.bpp_z), rtol=1e-5)
    assert float(metrics["loss"]) > 0 and np.isfinite(float(metrics["lpips"]))
