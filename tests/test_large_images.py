"""Memory-bounded g_a / g_s (svi_jax.codec.banded, tiling): tiles equal whole-image processing,
the plan follows the memory budget, and an image over budget fails before any work."""

from __future__ import annotations

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import svi_jax
from svi_jax.codec import Codec, api, banded, tiling
from svi_jax.codec import format as fmt
from svi_jax.codec.cli import main
from svi_jax.configs import tiny
from svi_jax.data.image_io import DataError
from svi_jax.nn.model import ProgressiveSIC
from svi_jax.weights.export import save_exported_model

TOLERANCE = 1e-5  # max |tiled - whole| of y (observed: 0.0 on XLA:CPU)


@pytest.fixture(scope="module")
def model_params():
    """The tiny model with weights spread far from init (std 0.02 makes attention almost
    uniform, so a wrong halo would change the output by less than the tolerance)."""
    model = svi_jax.build_model(tiny.get_config().model)
    params = _init(model)
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(1)
    spread = [np.asarray(a) + rng.normal(0, 0.2, a.shape).astype(np.float32) for a in leaves]
    return model, jax.tree.unflatten(tree, [jnp.asarray(a) for a in spread])


def _init(model):
    return svi_jax.init_params(model, jax.random.PRNGKey(0))


@jax.jit
def _whole_analysis(params, x):
    model = svi_jax.build_model(tiny.get_config().model)
    return model.apply({"params": params}, x, method=ProgressiveSIC.analysis)[0]


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    return np.clip(smooth + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def _padded_float(image):
    h, w = image.shape[:2]
    x = np.pad(image.astype(np.float32) / 255.0, ((0, -h % 64), (0, -w % 64), (0, 0)))
    return jnp.asarray(x)[None]


def _plan(geometry, shape, lengths):
    rows = tiling.plan_axis(shape[0], lengths[0], geometry)
    cols = tiling.plan_axis(shape[1], lengths[1], geometry)
    return tiling.Plan(rows, cols, 0)


def test_geometry_of_the_shipped_configs():
    """Alignment = one stage-3 window (8 latent rows = 128 px); halos from the receptive field
    (the empirical tests below show one row less is not enough)."""
    model = svi_jax.build_model(tiny.get_config().model)
    ga, gs = tiling.analysis_geometry(model), tiling.synthesis_geometry(model)
    assert (ga.align, ga.halo, gs.align, gs.halo) == (8, 16, 8, 12)
    # A stage whose construction grid fits one window is unshifted: less reach, finer cuts.
    small = model.clone(construction_size=(64, 64))  # stages 32, 16, 8, 4 tokens
    g = tiling.analysis_geometry(small)
    assert g.halo < ga.halo and g.align == 4


# 700x500 -> padded 704x512 (latent 44x32): a shorter last band that touches the real bottom,
# where the Swin blocks zero-pad to the window; 768x768 (48x48): 2x2 tiles of one shape;
# 640x1000 -> 640x1024 (40x64): four column bands, two keeping only 8 columns.
@pytest.mark.parametrize(
    "size, lengths, n_tiles",
    [((700, 500), (40, 32), 2), ((768, 768), (40, 40), 4), ((640, 1000), (40, 40), 4)],
)
def test_tiled_analysis_equals_whole_image(model_params, size, lengths, n_tiles):
    model, params = model_params
    image = _image(*size)
    whole = np.asarray(_whole_analysis(params, _padded_float(image)))
    geometry = tiling.analysis_geometry(model)
    plan = _plan(geometry, whole.shape[:2], lengths)
    assert len(plan.rows) * len(plan.cols) == n_tiles
    y = banded.analysis_tiles(model, params, image, plan)
    assert y.shape == whole.shape
    assert np.abs(y - whole).max() <= TOLERANCE
    # One halo row less: the kept rows next to a cut edge change (the halo is needed).
    short = _plan(dataclasses.replace(geometry, halo=geometry.halo - 1), whole.shape[:2], lengths)
    assert np.abs(banded.analysis_tiles(model, params, image, short) - whole).max() > TOLERANCE


@pytest.mark.parametrize(
    "latent_hw, lengths, n_tiles", [((44, 32), (32, 32), 3), ((40, 48), (32, 40), 4)]
)
def test_tiled_synthesis_equals_whole_image(model_params, latent_hw, lengths, n_tiles):
    model, params = model_params
    latent = np.random.default_rng(1).normal(0, 3, (*latent_hw, 64)).astype(np.float32)
    whole = np.asarray(banded._synthesis_tile(model, params, jnp.asarray(latent)[None]))
    geometry = tiling.synthesis_geometry(model)
    plan = _plan(geometry, latent_hw, lengths)
    assert len(plan.rows) * len(plan.cols) == n_tiles
    out = banded.synthesis_tiles(model, params, latent, plan)
    diff = np.abs(out.astype(np.int32) - whole)
    # uint8 after rounding: a 1e-6 difference may flip a value sitting on .5 by one level
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-4
    short = _plan(dataclasses.replace(geometry, halo=geometry.halo - 1), latent_hw, lengths)
    bad = np.abs(banded.synthesis_tiles(model, params, latent, short).astype(np.int32) - whole)
    assert bad.max() > 1


def test_plan_follows_the_budget():
    model = svi_jax.build_model(tiny.get_config().model)
    g = tiling.analysis_geometry(model)
    rows, cols = 252, 376  # a 6000x4000 photo, padded
    whole = tiling.estimate_bytes(g, rows, cols, tile=False)
    plan = tiling.plan_tiles(rows, cols, g, whole, "g_a")
    assert plan.whole and plan.estimate == whole
    for gib in (0.5, 1.0, 2.0, 4.0):
        budget = int(gib * tiling.GIB)
        plan = tiling.plan_tiles(rows, cols, g, budget, "g_a")
        assert not plan.whole and plan.estimate <= budget
        assert len(plan.shapes()) <= 4
        for r, c in plan.tiles():  # every call fits, starts aligned, and the kept parts tile
            assert tiling.estimate_bytes(g, r.stop - r.start, c.stop - c.start) <= budget
            assert r.start % g.align == 0 and c.start % g.align == 0
        for bands, n in ((plan.rows, rows), (plan.cols, cols)):
            assert bands[0].keep_start == 0 and bands[-1].keep_stop == bands[-1].stop == n
            for a, b in zip(bands, bands[1:], strict=False):
                assert a.keep_stop == b.keep_start
                assert b.keep_start - b.start >= g.halo and a.stop - a.keep_stop >= g.halo
    # A larger budget never means more computation.
    areas = []
    for gib in (0.5, 1.0, 2.0, 4.0):
        p = tiling.plan_tiles(rows, cols, g, int(gib * tiling.GIB), "g_a")
        areas.append(sum(r.stop - r.start for r in p.rows) * sum(c.stop - c.start for c in p.cols))
    assert areas == sorted(areas, reverse=True)


def test_over_budget_fails_before_any_work(model_params, monkeypatch):
    model, params = model_params
    g = tiling.analysis_geometry(model)
    with pytest.raises(tiling.MemoryBudgetError, match=r"4032x6016 px .* GiB .* budget"):
        tiling.plan_tiles(252, 376, g, 100 * 2**20, "g_a")
    assert issubclass(tiling.MemoryBudgetError, DataError)  # the CLI prints it as one line

    def no_work(*args, **kwargs):
        raise AssertionError("network or entropy work started")

    monkeypatch.setenv(tiling.BUDGET_ENV, "0.01")
    monkeypatch.setattr(api, "_analyze", no_work)
    monkeypatch.setattr(banded, "_analysis_tile", no_work)
    image = _image(1024, 1024)
    with pytest.raises(tiling.MemoryBudgetError, match="1024x1024"):
        banded.analyze(model, params, image, None, whole=api._analyze)
    # The decoder refuses from the header alone, before decoding a symbol.
    codec = Codec.__new__(Codec)
    codec.model, codec.model_hash = model, bytes(32)
    codec.entropy = types.SimpleNamespace(digest=bytes(8))  # the header's digest matches
    header = fmt.Header(bytes(32), bytes(8), 4000, 6000, 16, 16, 0)
    monkeypatch.setattr(api, "StreamDecoder", no_work)
    segment = fmt.Segment(b"\0", 0)
    with pytest.raises(tiling.MemoryBudgetError, match="g_s"):
        codec.decode_symbols(fmt.pack(header, segment, [segment] * 16))
    monkeypatch.setenv(tiling.BUDGET_ENV, "lots")
    with pytest.raises(DataError, match="SVI_MEMORY_BUDGET_GIB"):
        tiling.memory_budget()


def test_cli_over_budget_is_one_line(tmp_path, monkeypatch, capsys):
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    save_exported_model(tmp_path / "export", config, _init(model))
    Image.fromarray(_image(1024, 1536)).save(tmp_path / "big.png")
    monkeypatch.setenv(tiling.BUDGET_ENV, "0.05")
    out = tmp_path / "big.sic"
    rc = main(["compress", str(tmp_path / "big.png"), str(out), "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and not out.exists()
    assert len(err.splitlines()) == 1 and "GiB" in err and "1024x1536" in err


def test_codec_hooks_tile_over_budget(model_params, monkeypatch):
    """Codec.analyze and the decoder's reconstruction give the whole-image numbers when the
    budget forces tiles (y symbols exactly; pixels within one 8-bit level)."""
    model, params = model_params
    codec = Codec.__new__(Codec)
    codec.model, codec.params = model, params
    codec.medians = jnp.zeros((model.hyper_channels,))
    image = _image(768, 768)
    y_whole, z_whole = codec.analyze(image)
    g = tiling.analysis_geometry(model, banded._param_bytes(params))
    budget = tiling.estimate_bytes(g, 40, 48)  # 40-row bands over the full 48 columns
    monkeypatch.setenv(tiling.BUDGET_ENV, str(budget / tiling.GIB))
    y_tiled, z_tiled = codec.analyze(image)
    assert np.mean(y_tiled != y_whole) < 1e-4 and np.mean(z_tiled != z_whole) < 1e-3

    hyper = jnp.asarray(np.random.default_rng(2).normal(0, 2, (48, 48, 128)), jnp.float32)
    uniform = api.detail_uniform(3, y_whole.shape)
    y_hat = y_whole.astype(np.float32)
    tiled = banded.reconstruct(model, params, y_hat, hyper, 5, uniform, whole=api._reconstruct)
    monkeypatch.delenv(tiling.BUDGET_ENV)
    whole = banded.reconstruct(model, params, y_hat, hyper, 5, uniform, whole=api._reconstruct)
    diff = np.abs(np.asarray(tiled, np.int32) - np.asarray(whole))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-4
