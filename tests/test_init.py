"""A fresh model draws its parameters from the official (PyTorch) distributions.

The fans are derived here from the PyTorch weight layout, independently of the
`variance_scaling` axes the layers use: a Conv2d weight is (out, in/groups, k, k), a
ConvTranspose2d weight is (in, out, k, k); torch takes fan_in = size(1)·k·k and
fan_out = size(0)·k·k of either (torch.nn.init._calculate_fan_in_and_fan_out).
- default Conv init (context model, entropy parameters, patch embedding, output conv):
  weights and biases U(±1/sqrt(fan_in));
- the hyperprior's kaiming_normal_(mode="fan_out"): N(0, gain/sqrt(fan_out)), gain sqrt(2)
  before a (Leaky)ReLU and 1 on the last layer (official hyperprior in the SIC code).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from svi_jax.configs import tiny
from svi_jax.nn.model import build_model, init_params

MIN_SIZE_FOR_STD = 500  # leaves this large estimate their std within ~5% (3 sigma)
STD_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def params() -> dict:
    model = build_model(tiny.get_config().model)
    return jax.device_get(init_params(model, jax.random.key(3)))


def torch_fans(kernel: np.ndarray, transposed: bool) -> tuple[int, int]:
    """(fan_in, fan_out) of the PyTorch weight that the HWIO `kernel` transposes to."""
    kh, kw, a, b = kernel.shape
    torch_shape = (a, b, kh, kw) if transposed else (b, a, kh, kw)
    receptive = kh * kw
    return torch_shape[1] * receptive, torch_shape[0] * receptive


def check_std(values: np.ndarray, expected: float, what: str) -> None:
    if values.size >= MIN_SIZE_FOR_STD:
        ratio = float(np.std(values)) / expected
        assert abs(ratio - 1) < STD_TOLERANCE, f"{what}: std {ratio:.3f} x expected"


DEFAULT_INIT = [
    ("context_model",),
    ("entropy_parameters", "conv_0"),
    ("entropy_parameters", "conv_2"),
    ("entropy_parameters", "conv_4"),
    ("ga", "patch_embed", "proj"),
    ("gs", "outconv"),
]


@pytest.mark.parametrize("path", DEFAULT_INIT, ids="/".join)
def test_default_conv_init_is_torch_uniform_over_fan_in(params, path):
    layer = params
    for key in path:
        layer = layer[key]
    fan_in, _ = torch_fans(layer["kernel"], transposed=False)
    bound = 1 / math.sqrt(fan_in)
    for name in ("kernel", "bias"):
        values = np.asarray(layer[name])
        assert np.max(np.abs(values)) <= bound * (1 + 1e-6), f"{path} {name} exceeds U bound"
        if values.size >= 32:  # P(max |U| < 0.8 bound) = 0.8**n
            assert np.max(np.abs(values)) > 0.8 * bound, f"{path} {name} far inside its U bound"
        check_std(values, bound / math.sqrt(3), f"{path} {name}")


HYPERPRIOR = [
    ("ha", "conv_0", False, math.sqrt(2)),
    ("ha", "conv_2", False, math.sqrt(2)),
    ("ha", "conv_4", False, 1.0),
    ("hs", "deconv_0", True, math.sqrt(2)),
    ("hs", "deconv_2", True, math.sqrt(2)),
    ("hs", "deconv_4", True, 1.0),
]


@pytest.mark.parametrize("module,name,transposed,gain", HYPERPRIOR, ids=lambda v: str(v))
def test_hyperprior_init_is_kaiming_normal_over_fan_out(params, module, name, transposed, gain):
    layer = params[module][name]
    kernel = np.asarray(layer["kernel"])
    fan_in, fan_out = torch_fans(kernel, transposed)
    check_std(kernel, gain / math.sqrt(fan_out), f"{module}/{name} kernel")
    assert abs(float(np.mean(kernel))) < 3 * gain / math.sqrt(fan_out) / math.sqrt(kernel.size)
    # biases keep torch's default init (only the weights take kaiming_normal_)
    bias = np.asarray(layer["bias"])
    assert np.max(np.abs(bias)) <= (1 + 1e-6) / math.sqrt(fan_in), f"{module}/{name} bias"
