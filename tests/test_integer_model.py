"""The integer entropy model (svi_jax.codec.integer_model, exact_math): close to the float
model, exact integers however they are computed (float64 BLAS, einsum, int64 numpy; 1 or 2
threads), the decoder's wavefront equal to the encoder's one-pass parameters.

The integer path runs in numpy on the host, never under jit: its only inputs are decoded
integer symbols and integer parameters, and every accumulator is an exact integer, so the
computation has one result. The tests below check that claim against independent ways of
computing the same integers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import svi_jax
from svi_jax.codec import exact_math as em
from svi_jax.codec import integer_model as im
from svi_jax.codec.tables import FRAC_BITS
from svi_jax.codec.wavefront import decode_slice, get_schedule
from svi_jax.configs import tiny
from svi_jax.nn.model import ProgressiveSIC
from svi_jax.weights.export import save_exported_model

Q = float(1 << FRAC_BITS)


@pytest.fixture(scope="module")
def setup():
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(np.asarray, params)
    # Wider entropy-parameter weights than the init so σ and μ spread over many table rows.
    params["entropy_parameters"] = jax.tree_util.tree_map(
        lambda a: a * 4.0, params["entropy_parameters"]
    )
    rng = np.random.default_rng(0)
    z = rng.integers(-4, 5, (3, 5, model.hyper_channels)).astype(np.int32)
    y = rng.integers(-6, 7, (12, 20, model.latent_channels)).astype(np.int32)
    return config, model, params, im.IntegerEntropyModel(params, model.num_slices), z, y


def _outputs(entropy: im.IntegerEntropyModel, z, y):
    hyper = entropy.hyper(z)
    sigma, mu = entropy.gaussian_params(hyper, y, entropy.num_slices)
    return hyper, sigma, mu


def test_exact_math_matches_scipy():
    x = np.linspace(-30, 30, 20001)
    np.testing.assert_allclose(em.exp(x), np.exp(x), rtol=1e-15)
    np.testing.assert_allclose(em.log(np.exp(x)), x, atol=1e-14)
    np.testing.assert_allclose(em.tanh(x), np.tanh(x), atol=1e-15)
    np.testing.assert_allclose(em.sigmoid(x), scipy.special.expit(x), rtol=1e-14)
    np.testing.assert_allclose(em.softplus(x), np.logaddexp(0, x), atol=1e-13)
    t = np.linspace(0, 35, 20001)
    np.testing.assert_allclose(em.normal_upper_tail(t), scipy.stats.norm.sf(t), rtol=1e-11)
    a = x[:-1] / 3
    np.testing.assert_allclose(
        em.normal_cdf_difference(a, a + 0.01),
        scipy.stats.norm.cdf(a + 0.01) - scipy.stats.norm.cdf(a),
        atol=1e-15,
    )


def test_close_to_the_float_model(setup):
    _, model, params, entropy, z, y = setup
    medians = np.asarray(model.apply({"params": params}, method=ProgressiveSIC.z_medians))
    hyper_f = model.apply(
        {"params": params}, (z + medians)[None], method=ProgressiveSIC.hyper_synthesis
    )
    sigma_f, mu_f = model.apply(
        {"params": params},
        hyper_f,
        jnp.asarray(y, jnp.float32)[None],
        method=ProgressiveSIC.gaussian_params,
    )
    hyper, sigma, mu = _outputs(entropy, z, y)
    # Weights carry 12 bits per output channel, activations 12 fraction bits: errors of a
    # few 1e-3 of the outputs' range (the rate cost of that is measured in test_codec).
    for ours, ref in ((hyper / Q, hyper_f[0]), (mu / Q, mu_f[0]), (sigma / Q, sigma_f[0])):
        ref = np.asarray(ref)
        np.testing.assert_allclose(ours, ref, atol=4e-3 * np.abs(ref).max())
    assert np.ptp(sigma) > 2 * Q and np.ptp(mu) > 2 * Q  # a real spread of parameters


def _int64_dot(x, weight):
    return (np.asarray(x).astype(np.int64) @ weight.astype(np.int64)).astype(np.float64)


@pytest.mark.parametrize("how", ["int64", "einsum", "blas"])
def test_exact_however_computed(setup, monkeypatch, how):
    """float64 BLAS, einsum's loop and int64 numpy give the same integers, bit for bit."""
    *_, entropy, z, y = setup
    reference = _outputs(entropy, z, y)
    fresh = im.IntegerEntropyModel(setup[2], entropy.num_slices)
    if how == "int64":
        monkeypatch.setattr(im, "_dot", _int64_dot)
    else:
        monkeypatch.setattr(im, "_SMALL_PRODUCT", 2**62 if how == "einsum" else -1)
    for ours, ref in zip(_outputs(fresh, z, y), reference, strict=True):
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours, ref)


def test_decoder_wavefront_equals_encoder_pass(setup):
    """The decoder's step-by-step parameters are the encoder's one-pass ones, exactly."""
    *_, entropy, z, y = setup
    hyper, sigma, mu = _outputs(entropy, z, y)
    w, (h, wd) = entropy.width, y.shape[:2]
    earlier = np.zeros((h, wd, 2 * y.shape[-1]))
    for raster in (False, True):
        rows, cols, counts = schedule = get_schedule(h, wd, raster)
        earlier[:] = 0
        for s in range(entropy.num_slices):
            step = iter(range(len(rows)))
            truth = y[..., s * w : (s + 1) * w]

            def decode(sig, m, s=s, step=step, truth=truth, rows=rows, cols=cols, counts=counts):
                t = next(step)
                r, q = rows[t, : counts[t]], cols[t, : counts[t]]
                np.testing.assert_array_equal(sig, sigma[r, q, s * w : (s + 1) * w])
                np.testing.assert_array_equal(m, mu[r, q, s * w : (s + 1) * w])
                return truth[r, q]

            part = slice(2 * w * s, 2 * w * (s + 1))
            out = decode_slice(
                entropy, earlier[..., part], entropy.hyper_slice(hyper, s), s, decode, schedule
            )
            np.testing.assert_array_equal(out, truth)
            earlier[..., 2 * w * (s + 1) :] += entropy.context_from_slice(out, s, s + 1)


def test_requantize_and_activation_rules():
    layer = im.IntLayer(np.zeros((1, 3)), np.array([2, 0, -3]), np.array([0, 5, 0]))
    acc = np.array([[6, 7, 3], [-6, -7, -3], [-5, 0, 1 << 40]], np.float64)
    out = im.requantize(acc, layer)
    # shift 2: 6/4 = 1.5 -> 2, −6/4 = −1.5 -> −1 (half up), −5/4 -> −1; shift −3: ×8, saturated.
    np.testing.assert_array_equal(out, [[2, 12, 24], [-1, -2, -24], [-1, 5, im.ACT_LIMIT]])
    y = np.array([-(2**20), -100, -50, 0, 7])
    np.testing.assert_array_equal(im.leaky_relu(y), [-10486, -1, -1, 0, 7])  # −0.500011 -> −1
    np.testing.assert_array_equal(im.relu(y), [0, 0, 0, 0, 7])


def test_oversized_weights_are_refused():
    wide = np.ones((5, 5, 16384, 2), np.float32)  # 2**18.6 taps of 2**11 on 2**24 inputs
    with pytest.raises(im.IntegerModelError, match="53-bit"):
        im.quantize_layer(wide, np.zeros(2), 12, im.ACT_LIMIT, "wide")
    im.quantize_layer(wide[:, :, :8192], np.zeros(2), 12, im.ACT_LIMIT, "half as wide")
    huge = np.full((1, 1, 4, 2), 2.0**45, np.float32)  # would need a left shift by 34
    with pytest.raises(im.IntegerModelError, match="53-bit"):
        im.quantize_layer(huge, np.zeros(2), 12, im.ACT_LIMIT, "huge")
    with pytest.raises(im.IntegerModelError, match="non-finite"):
        im.quantize_layer(huge * np.nan, np.zeros(2), 12, im.ACT_LIMIT, "nan")


_THREAD_SCRIPT = """
import hashlib, sys
import numpy as np
from svi_jax.codec.integer_model import IntegerEntropyModel
from svi_jax.weights.export import load_exported_model
config, params, _ = load_exported_model(sys.argv[1])
data = np.load(sys.argv[2])
entropy = IntegerEntropyModel(params, config.model.num_slices)
hyper = entropy.hyper(data["z"])
sigma, mu = entropy.gaussian_params(hyper, data["y"], entropy.num_slices)
h = hashlib.sha256()
for a in (hyper, sigma, mu):
    h.update(a.tobytes())
print(entropy.digest.hex(), h.hexdigest())
"""


def _single_thread(env: dict) -> tuple[list[str], dict]:
    """Prefix and environment that pin a process to one core / one thread."""
    env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    prefix = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    return prefix, env


def test_same_integers_with_one_and_two_threads(setup, tmp_path):
    config, _, params, entropy, z, y = setup
    save_exported_model(tmp_path / "export", config, params)
    np.savez(tmp_path / "in.npz", z=z, y=y)
    script = tmp_path / "run.py"
    script.write_text(_THREAD_SCRIPT)
    args = [sys.executable, str(script), str(tmp_path / "export"), str(tmp_path / "in.npz")]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    prefix, env1 = _single_thread(os.environ)
    outs = [
        subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600, check=True)
        for cmd, e in ((prefix + args, env1), (args, env))
    ]
    h = hashlib.sha256()
    for a in _outputs(entropy, z, y):
        h.update(a.tobytes())
    expected = f"{entropy.digest.hex()} {h.hexdigest()}"
    assert [o.stdout.strip() for o in outs] == [expected, expected]
