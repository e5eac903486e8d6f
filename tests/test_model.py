"""Model properties that need no reference data: causality, level isolation, entropy models,
shapes on awkward sizes, checkpoint-import errors, one compilation for all levels, learning."""

from __future__ import annotations

import importlib
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import svi_jax
from svi_jax.configs import tiny
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.entropy_models import gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC
from svi_jax.tracing import trace_count, traced


@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny.get_config()
    model = svi_jax.build_model(cfg.model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))
    return cfg, model, params


def test_context_model_is_causal(tiny_model):
    """sigma/mu of slice s at p: zero gradient w.r.t. later slices and later positions of s."""
    _, model, params = tiny_model
    h, w, c = 5, 6, model.latent_channels
    width = model.slice_width
    y_hat = jax.random.normal(jax.random.PRNGKey(1), (1, h, w, c)) * 3
    hyper = jax.random.normal(jax.random.PRNGKey(2), (1, h, w, 2 * c))

    def params_at(y, s, i, j):
        sig, mu = model.apply({"params": params}, hyper, y, method=ProgressiveSIC.gaussian_params)
        sl = slice(s * width, (s + 1) * width)
        return jnp.sum(sig[0, i, j, sl]) + jnp.sum(mu[0, i, j, sl])

    grad_fn = jax.jit(jax.grad(params_at), static_argnums=(1, 2, 3))
    for s, i, j in [(0, 2, 3), (5, 0, 0), (15, 4, 5), (7, 2, 0)]:
        g = np.asarray(grad_fn(y_hat, s, i, j))[0]  # (h, w, c)
        later_slices = g[:, :, (s + 1) * width :]
        assert np.all(later_slices == 0), f"slice {s} sees later slices"
        own = g[:, :, s * width : (s + 1) * width]
        raster = np.arange(h * w).reshape(h, w)
        later_pos = raster >= raster[i, j]  # the position itself and everything after it
        assert np.all(own[later_pos] == 0), f"slice {s} at {(i, j)} sees its future"
        # and the context is not trivially empty: earlier slices or earlier positions matter
        if s > 0:
            assert np.any(g[:, :, : s * width] != 0)
        if i > 0:
            assert np.any(own[raster < raster[i, j]] != 0)


def test_level_rate_and_reconstruction_ignore_untransmitted_channels(tiny_model):
    """At level l nothing coded in channels >= W*l reaches bpp_ys or the level-l image."""
    _, model, params = tiny_model
    x = jax.random.uniform(jax.random.PRNGKey(3), (1, 64, 64, 3))
    lat = svi_jax.encode_latents(model, params, x)
    c, width = model.latent_channels, model.slice_width
    u = jax.random.uniform(jax.random.PRNGKey(4), lat.y.shape)

    def level_outputs(y_hat, level):
        sig, mu = model.apply(
            {"params": params}, lat.hyper, y_hat, method=ProgressiveSIC.gaussian_params
        )
        lik = gaussian_likelihood(y_hat, mu, sig)
        r = svi_jax.rate_terms(lik, lik, jnp.ones((1, 1, 1, 1)), level, model.num_slices, 64 * 64)
        details = svi_jax.sample_details(lat.hyper[..., c:], u)
        y_l = svi_jax.compose_level_latent(y_hat, details, level, width)
        x_l = model.apply({"params": params}, y_l, method=ProgressiveSIC.synthesis)
        return r.bpp_ys, jnp.sum(x_l)

    grads = jax.jit(jax.jacrev(level_outputs))
    for level in (1, 7, 15):
        g_rate, g_img = grads(lat.y_hat, jnp.int32(level))
        cut = width * level
        assert np.all(np.asarray(g_rate)[..., cut:] == 0)
        assert np.all(np.asarray(g_img)[..., cut:] == 0)
        assert np.any(np.asarray(g_rate)[..., :cut] != 0)
        assert np.any(np.asarray(g_img)[..., :cut] != 0)


def test_bottleneck_likelihoods_sum_to_one(tiny_model):
    _, model, params = tiny_model
    med = model.apply({"params": params}, method=ProgressiveSIC.z_medians)
    grid = jnp.arange(-2000, 2001, dtype=jnp.float32)  # the untrained density is wide
    values = grid[:, None] + med[None, :]  # (K, C): integer offsets around each median
    lik = model.apply({"params": params}, values[None, None], method=ProgressiveSIC.z_likelihood)
    totals = np.asarray(jnp.sum(lik[0, 0], axis=0))
    np.testing.assert_allclose(totals, 1.0, atol=1e-3)


def test_gaussian_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 3, 1000).astype(np.float32)
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(30), 1000)).astype(np.float32)
    sym = np.round(mu + rng.normal(0, 1, 1000) * sigma).astype(np.float32)
    ours = np.asarray(gaussian_likelihood(sym, mu, sigma))
    s = np.maximum(sigma, 0.11).astype(np.float64)
    exact = scipy.stats.norm.cdf((sym + 0.5 - mu) / s) - scipy.stats.norm.cdf((sym - 0.5 - mu) / s)
    exact = np.clip(exact, 1e-9, 1.0)
    np.testing.assert_allclose(ours, exact, rtol=2e-5, atol=1e-7)


def test_shapes_and_finiteness_on_any_size(tiny_model):
    """Square, non-square, below 64 and not-multiple-of-64 sizes (one jit, cached by shape)."""
    cfg, model, params = tiny_model
    forward = jax.jit(lambda p, x, n: svi_jax.train_forward(model, p, x, jnp.int32(3), n))
    for hw in [(64, 64), (30, 21), (48, 80), (70, 130), (128, 192)]:
        x = jax.random.uniform(jax.random.PRNGKey(5), (1, *hw, 3))
        padded, orig = svi_jax.pad_to_multiple(x)
        assert padded.shape[1] % 64 == 0 and padded.shape[2] % 64 == 0
        assert padded.shape[1] - hw[0] < 64 and padded.shape[2] - hw[1] < 64
        noise = svi_jax.draw_train_noise(model, jax.random.PRNGKey(6), padded.shape, 2)
        out = forward(params, padded, noise)
        lh, lw = padded.shape[1] // 16, padded.shape[2] // 16
        assert out["latents"].y.shape == (1, lh, lw, model.latent_channels)
        assert out["latents"].z.shape == (1, lh // 4, lw // 4, model.hyper_channels)
        assert out["x_hat_samples"].shape == (2, *padded.shape[1:])
        assert svi_jax.crop_to(out["x_hat_syn"], orig).shape == (1, *hw, 3)
        for leaf in jax.tree_util.tree_leaves(out):
            assert np.all(np.isfinite(np.asarray(leaf))), hw


def test_unpadded_size_is_a_clear_error(tiny_model):
    _, model, params = tiny_model
    with pytest.raises(ValueError, match="multiples of 64"):
        svi_jax.draw_train_noise(model, jax.random.PRNGKey(0), (1, 48, 64, 3), 1)


def test_one_compilation_serves_all_levels(tiny_model):
    cfg, model, params = tiny_model
    lpips_params = load_lpips_params("alex")
    x = jax.random.uniform(jax.random.PRNGKey(7), (1, 64, 64, 3))
    noise = svi_jax.draw_train_noise(model, jax.random.PRNGKey(8), x.shape, 1)

    @jax.jit
    @traced("test_levels_loss")
    def loss(p, level):
        return svi_jax.svi_loss(model, p, lpips_params, x, level, noise, cfg.loss)[0]

    before = trace_count("test_levels_loss")
    values = [float(loss(params, jnp.int32(level))) for level in range(1, 17)]
    assert trace_count("test_levels_loss") - before == 1
    assert len(set(values)) > 1  # the level really changes the loss


@pytest.mark.slow
def test_optax_steps_lower_the_svi_loss(tiny_model):
    cfg, model, params = tiny_model
    lpips_params = load_lpips_params("alex")
    x = jax.random.uniform(jax.random.PRNGKey(9), (2, 64, 64, 3))
    x = jax.image.resize(x[:, ::8, ::8], x.shape, "linear")  # smooth, learnable content
    noise = svi_jax.draw_train_noise(model, jax.random.PRNGKey(10), x.shape, 1)
    opt = optax.adam(1e-3)

    def loss_fn(p):
        return svi_jax.svi_loss(model, p, lpips_params, x, jnp.int32(8), noise, cfg.loss)[0]

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = opt.init(params)
    losses = []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses


def test_import_reports_missing_extra_and_misshaped_keys(tiny_model):
    _, model, params = tiny_model
    state = svi_jax.export_official_state_dict(params)
    roundtrip = svi_jax.import_official_state_dict(model, state)
    chex.assert_trees_all_equal(roundtrip, params)

    missing = dict(state)
    del missing["gs.outconv.weight"]
    with pytest.raises(svi_jax.CheckpointImportError, match="missing key gs.outconv.weight"):
        svi_jax.import_official_state_dict(model, missing)
    one_block = dict(state)  # Swin blocks are stacked per stage: each block's keys still count
    del one_block["gs.layers.0.blocks.2.attn.qkv.weight"]
    with pytest.raises(svi_jax.CheckpointImportError, match="missing key gs.layers.0.blocks.2"):
        svi_jax.import_official_state_dict(model, one_block)
    assert "ga.layers.3.blocks.2.mlp.fc1.weight" in state  # depths (1, 2, 2, 3)
    assert "ga.layers.3.blocks.3.mlp.fc1.weight" not in state
    extra = dict(state, **{"ga.layers.9.blocks.0.norm1.weight": np.zeros(3)})
    with pytest.raises(svi_jax.CheckpointImportError, match="unexpected key ga.layers.9"):
        svi_jax.import_official_state_dict(model, extra)
    bad = dict(state, **{"ha.0.weight": np.zeros((48, 64, 5, 5), np.float32)})
    with pytest.raises(svi_jax.CheckpointImportError, match="shape mismatch for ha.0.weight"):
        svi_jax.import_official_state_dict(model, bad)
    with pytest.raises(svi_jax.CheckpointImportError, match="not found"):
        svi_jax.import_official_state_dict(model, "/nonexistent/ckpt.npz")


def test_pixel_shuffle_uses_pytorch_order():
    from svi_jax.nn.transforms import pixel_shuffle

    x = np.arange(2 * 3 * 8, dtype=np.float32).reshape(1, 2, 3, 8)  # C = 8 -> 2 channels out
    y = np.asarray(pixel_shuffle(jnp.asarray(x)))
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(y[0, i::2, j::2, c], x[0, :, :, 4 * c + 2 * i + j])


@pytest.mark.parametrize("shift", [0, 4])
def test_chunked_window_attention_matches_unchunked(shift):
    from svi_jax.nn.swin import SwinBlock

    x = jax.random.normal(jax.random.PRNGKey(11), (2, 12, 20, 32))  # padded to 16x24: 12 windows
    plain = SwinBlock(num_heads=4, window=8, shift=shift)
    chunked = SwinBlock(num_heads=4, window=8, shift=shift, attention_chunk_windows=5)
    params = plain.init(jax.random.PRNGKey(12), x)
    a = plain.apply(params, x)
    b = chunked.apply(params, x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    ga = jax.grad(lambda p: jnp.sum(plain.apply(p, x) ** 2))(params)
    gb = jax.grad(lambda p: jnp.sum(chunked.apply(p, x) ** 2))(params)
    chex.assert_trees_all_close(ga, gb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "demo", "paper"])
def test_config_model_fields_are_the_module_fields(name):
    """build_model is ProgressiveSIC(**config.model): same names, only words resolved."""
    config = importlib.import_module(f"svi_jax.configs.{name}").get_config()
    model = svi_jax.build_model(config.model)
    for field, value in config.model.items():
        built = getattr(model, field)  # AttributeError: a config field the module lacks
        if field not in ("dtype", "precision", "remat", "attention_implementation"):
            assert built == (tuple(value) if isinstance(value, list) else value), field
    same = ProgressiveSIC(
        **{
            **config.model,
            "dtype": model.dtype,
            "precision": model.precision,
            "remat": model.remat,
            "attention_implementation": model.attention_implementation,
        }
    )
    assert same == model
    assert jnp.dtype(model.dtype) in (jnp.float32, jnp.bfloat16)
    # a config read back from JSON (lists) builds the same, hashable module
    assert svi_jax.build_model(config.model.to_dict()) == model
    assert hash(svi_jax.build_model(json_roundtrip(config.model))) == hash(model)


def json_roundtrip(section):
    return json.loads(section.to_json())


def test_unknown_config_model_field_is_named():
    config = tiny.get_config()
    config.model.embed_dims = (8, 8, 8, 8)
    with pytest.raises(ValueError, match="embed_dims"):
        svi_jax.build_model(config.model)
