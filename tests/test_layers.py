"""LayerNorm and GELU as PyTorch computes them (svi_jax/nn/layers.py), with small graphs.

References are float64 evaluations of PyTorch's formulas (nn.LayerNorm: two-pass biased
variance; nn.GELU(): x/2 (1 + erf(x/sqrt 2))), not the functions under test.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svi_jax.graph_size import hlo_instruction_count
from svi_jax.nn.layers import LN_EPS, gelu, layer_norm


def _compute_instructions(fn, *args) -> int:
    text = jax.jit(fn).trace(*args).lower().as_text("hlo")
    bookkeeping = sum(
        text.count(f" {op}(") for op in ("parameter", "constant", "tuple", "get-tuple-element")
    )
    return hlo_instruction_count(text) - bookkeeping


def _ln64(x, scale, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / (var + LN_EPS) ** 0.5 * scale + bias


@pytest.fixture(scope="module")
def ln_case():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2, 5, 7, 48)) * 3.0 + 1.5).astype(np.float32)
    params = {
        "params": {
            "scale": (1.0 + 0.1 * rng.normal(size=48)).astype(np.float32),
            "bias": (0.1 * rng.normal(size=48)).astype(np.float32),
        }
    }
    return x, params


def test_layer_norm_values_and_gradients_are_pytorchs(ln_case):
    x, params = ln_case
    ln = layer_norm("norm")
    p = params["params"]
    np.testing.assert_allclose(
        np.asarray(ln.apply(params, x)), _ln64(x.astype(np.float64), p["scale"], p["bias"]),
        atol=2e-6,
    )  # fmt: skip
    weights = np.random.default_rng(1).normal(size=x.shape)  # a loss that is not symmetric

    def loss(scale, bias, x):
        return jnp.sum(ln.apply({"params": {"scale": scale, "bias": bias}}, x) ** 3 * weights)

    grads = jax.grad(loss, argnums=(0, 1, 2))(p["scale"], p["bias"], x)
    jax.config.update("jax_enable_x64", True)  # autodiff of the float64 formula
    try:
        f64 = lambda s, b, x: jnp.sum(_ln64(x, s, b) ** 3 * weights)  # noqa: E731
        args64 = [jnp.asarray(a, jnp.float64) for a in (p["scale"], p["bias"], x)]
        expected = [np.asarray(e) for e in jax.grad(f64, argnums=(0, 1, 2))(*args64)]
        assert expected[0].dtype == np.float64
    finally:
        jax.config.update("jax_enable_x64", False)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_layer_norm_has_flax_parameters_and_a_smaller_graph(ln_case):
    x, _ = ln_case
    ours, flax_ln = layer_norm("norm"), nn.LayerNorm(epsilon=LN_EPS)
    mine = ours.init(jax.random.PRNGKey(0), x)
    theirs = flax_ln.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_map(np.shape, mine) == jax.tree_util.tree_map(np.shape, theirs)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(mine))
    np.testing.assert_allclose(ours.apply(mine, x), flax_ln.apply(theirs, x), atol=2e-6)

    def fwd_bwd(module, params):
        return lambda x: jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2), (0, 1))(params, x)

    # fwd + bwd: 43 compute instructions against Flax's 88 (jax 0.10.2)
    assert _compute_instructions(fwd_bwd(ours, mine), x) < 0.6 * _compute_instructions(
        fwd_bwd(flax_ln, theirs), x
    )


def test_layer_norm_in_bfloat16_keeps_float32_statistics(ln_case):
    x, params = ln_case
    ln = layer_norm("norm", jnp.bfloat16)
    out = ln.apply(params, x.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    grad = jax.grad(lambda x: jnp.sum(ln.apply(params, x).astype(jnp.float32)))(
        x.astype(jnp.bfloat16)
    )
    assert grad.dtype == jnp.bfloat16
    p = params["params"]
    want = _ln64(x.astype(jnp.bfloat16).astype(np.float64), p["scale"], p["bias"])
    np.testing.assert_allclose(np.asarray(out, np.float32), want, atol=0.04)  # bf16 output


def test_gelu_is_pytorchs_exact_gelu():
    x = np.concatenate(
        [np.linspace(-12.0, 12.0, 4001), np.random.default_rng(0).normal(size=4000) * 3]
    ).astype(np.float32)
    want = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(float)])
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), want, rtol=0, atol=2e-6)
    np.testing.assert_allclose(
        np.asarray(gelu(jnp.asarray(x))),
        np.asarray(jax.nn.gelu(jnp.asarray(x), approximate=False)),
        rtol=0,
        atol=2e-6,
    )
    slope = jax.vmap(jax.grad(gelu))(jnp.asarray(x))
    pdf = np.exp(-(x.astype(float) ** 2) / 2) / math.sqrt(2 * math.pi)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(float)])
    np.testing.assert_allclose(np.asarray(slope), cdf + x * pdf, rtol=0, atol=2e-6)
    assert gelu(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


def test_gelu_lowers_to_a_few_instructions():
    x = jnp.ones((4, 8))
    ours = _compute_instructions(gelu, x)
    erfc_form = _compute_instructions(lambda x: jax.nn.gelu(x, approximate=False), x)
    assert ours <= 12 < erfc_form // 4, (ours, erfc_form)  # measured 8 and 120 (jax 0.10.2)
