"""Import paths of the flat layout keep working after the move into subpackages."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svi_jax import _moved
from svi_jax.codec import Codec, api
from svi_jax.configs import tiny
from svi_jax.nn.model import ProgressiveSIC, build_model, init_params


@pytest.mark.parametrize("old,new", sorted(_moved.MOVED.items()))
def test_old_import_path_is_the_new_module_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new  # the moved module keeps its own spec
    assert importlib.util.find_spec(new) is not None


def test_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("svi_jax.no_such_module")


def test_float_hyper_diagnostic_is_h_s_of_the_dequantised_z():
    """codec.api._hyper (the float h_s a GPU repeatability probe calls) is h_s(z + medians)."""
    config = tiny.get_config()
    params = init_params(build_model(config.model), jax.random.key(0))
    codec = Codec(params, config)
    image = (np.arange(64 * 128 * 3) % 251).astype(np.uint8).reshape(64, 128, 3)
    _, z = codec.analyze(image)
    hyper = np.asarray(api._hyper(codec.model, codec.params, jnp.asarray(z), codec.medians))
    direct = codec.model.apply(
        {"params": codec.params},
        (jnp.asarray(z) + codec.medians)[None],
        method=ProgressiveSIC.hyper_synthesis,
    )[0]
    assert hyper.shape == (4, 8, 2 * codec.model.latent_channels)
    np.testing.assert_allclose(hyper, np.asarray(direct), rtol=1e-5, atol=1e-6)
