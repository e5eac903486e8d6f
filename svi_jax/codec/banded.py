"""Memory-bounded analysis g_a and synthesis g_s for large images: tiles with a halo.

A 24-megapixel photo needs ~13 GB for the tiny model's whole-image g_a on CPU (~85 GB for the
paper model). Here the image (or latent) is cut into overlapping row bands, or tiles when a
full-width band does not fit the budget, each run through the unchanged transform
(`model.apply(..., method=ProgressiveSIC.analysis / synthesis)`, a black box), and only the
positions far enough from a cut edge are kept: the result equals whole-image processing (same
numbers up to XLA's summation order; exact on XLA:CPU in tests/test_large_images.py). Where a
cut may go, the halo and the memory model: svi_jax/codec/tiling.py.

An image whose whole-image estimate fits the budget takes the codec's single call (same speed,
same numbers as before); otherwise tiles of at most two heights and two widths (at most four
compilations). If even the smallest tile does not fit, `MemoryBudgetError` (one line, with the
estimate) is raised before any network runs. Budget: $SVI_MEMORY_BUDGET_GIB or 3 GiB.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.codec.tiling import (
    GIB,
    MemoryBudgetError,
    Plan,
    analysis_geometry,
    estimate_bytes,
    memory_budget,
    plan_tiles,
    synthesis_geometry,
    tile_model,
)
from svi_jax.forward import compose_level_latent, sample_details
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC

__all__ = [
    "MemoryBudgetError",
    "analysis_tiles",
    "analyze",
    "check_synthesis",
    "reconstruct",
    "synthesis_tiles",
    "synthesize_levels",
]
log = logging.getLogger(__name__)


def _param_bytes(params) -> int:
    return int(sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params)))


def _padded(height: int, width: int) -> tuple[int, int]:
    """Latent rows, columns of an image zero-padded to a multiple of 64 (the codec's rule)."""
    return -(-height // DOWNSCALE_Z) * 4, -(-width // DOWNSCALE_Z) * 4


def check_synthesis(model: ProgressiveSIC, height: int, width: int, budget: int | None = None):
    """Raise MemoryBudgetError now if g_s of a height x width image cannot fit the budget."""
    budget = memory_budget() if budget is None else budget
    plan_tiles(*_padded(height, width), synthesis_geometry(model), budget, "g_s")


# --- jitted tiles (one compilation per tile shape) ----------------------------------------
@functools.partial(jax.jit, static_argnames="model")
def _analysis_tile(model: ProgressiveSIC, params, x):
    """g_a of one tile: float32 (1, 16h, 16w, 3) -> (h, w, C)."""
    log.info("compiling g_a for a %s px tile", x.shape[1:3])
    return model.apply({"params": params}, x, method=ProgressiveSIC.analysis)[0]


@functools.partial(jax.jit, static_argnames="model")
def _hyper_round(model: ProgressiveSIC, params, y, medians):
    """api._analyze's tail once y is known: (round(y), round(h_a(y) − median))."""
    z = model.apply({"params": params}, y[None], method=ProgressiveSIC.hyper_analysis)
    return jnp.round(y), jnp.round(z - medians)[0]


@functools.partial(jax.jit, static_argnames="model")
def _synthesis_tile(model: ProgressiveSIC, params, latent):
    """g_s of one tile, rounded as api._reconstruct: (1, h, w, C) -> uint8 (16h, 16w, 3)."""
    log.info("compiling g_s for a %s latent tile", latent.shape[1:3])
    x = model.apply({"params": params}, latent, method=ProgressiveSIC.synthesis)[0]
    return jnp.round(x * 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames="model")
def _level_latent(model: ProgressiveSIC, y_hat, hyper, level, uniform):
    """The latent g_s decodes at `level` (api._reconstruct before g_s)."""
    details = sample_details(hyper[..., model.latent_channels :], uniform)
    return compose_level_latent(y_hat, details, level, model.slice_width)


def _log_plan(plan: Plan, what: str, size: tuple[int, int]) -> None:
    log.info(
        "%s of a %dx%d image in %d x %d tiles, %d shapes (largest ~%.2f GiB)",
        what,
        *size,
        len(plan.rows),
        len(plan.cols),
        len(plan.shapes()),
        plan.estimate / GIB,
    )


# --- tile loops -----------------------------------------------------------------------------
def analysis_tiles(model, params, image: np.ndarray, plan: Plan) -> np.ndarray:
    """g_a of uint8 (H, W, 3) tile by tile -> y float32 (rows, cols, C) of the plan's grid.

    Pixels past H, W read as 0 (the codec's zero padding); tiles use `tile_model(model)`.
    """
    model, s, y = tile_model(model), DOWNSCALE_Y, None
    for r, c in plan.tiles():
        x = np.zeros(((r.stop - r.start) * s, (c.stop - c.start) * s, 3), np.float32)
        part = image[r.start * s : r.stop * s, c.start * s : c.stop * s]
        x[: part.shape[0], : part.shape[1]] = part.astype(np.float32) / 255.0
        tile = np.asarray(_analysis_tile(model, params, jnp.asarray(x)[None]))
        if y is None:
            y = np.zeros((plan.rows[-1].stop, plan.cols[-1].stop, tile.shape[-1]), np.float32)
        y[r.keep_start : r.keep_stop, c.keep_start : c.keep_stop] = tile[
            r.keep_start - r.start : r.keep_stop - r.start,
            c.keep_start - c.start : c.keep_stop - c.start,
        ]
    return y


def synthesis_tiles(model, params, latent: np.ndarray, plan: Plan) -> np.ndarray:
    """g_s of a latent (h, w, C) tile by tile -> uint8 (16h, 16w, 3), api._reconstruct's
    rounding; tiles use `tile_model(model)`."""
    model, s = tile_model(model), DOWNSCALE_Y
    out = np.zeros((latent.shape[0] * s, latent.shape[1] * s, 3), np.uint8)
    for r, c in plan.tiles():
        part = jnp.asarray(latent[None, r.start : r.stop, c.start : c.stop])
        tile = np.asarray(_synthesis_tile(model, params, part))
        out[r.keep_start * s : r.keep_stop * s, c.keep_start * s : c.keep_stop * s] = tile[
            (r.keep_start - r.start) * s : (r.keep_stop - r.start) * s,
            (c.keep_start - c.start) * s : (c.keep_stop - c.start) * s,
        ]
    return out


# --- hooks for the codec and the evaluation -------------------------------------------------
def analyze(model, params, image: np.ndarray, medians, whole, budget: int | None = None):
    """uint8 (H, W, 3) -> (round(y), round(z − median)) as api._analyze, memory-bounded.

    `whole(model, params, x, medians)` (api._analyze) runs when the whole image fits, on the
    image zero-padded to a multiple of 64 as before. Raises MemoryBudgetError before any work.
    """
    h, w = image.shape[:2]
    budget = memory_budget() if budget is None else budget
    geometry = analysis_geometry(model, _param_bytes(params))
    plan = plan_tiles(*_padded(h, w), geometry, budget, "g_a")
    if plan.whole:
        ph, pw = (-h) % DOWNSCALE_Z, (-w) % DOWNSCALE_Z
        x = np.pad(image.astype(np.float32) / 255.0, ((0, ph), (0, pw), (0, 0)))
        return whole(model, params, jnp.asarray(x)[None], medians)
    _log_plan(plan, "g_a", (h, w))
    y = analysis_tiles(model, params, image, plan)
    return _hyper_round(model, params, jnp.asarray(y), medians)


def _synthesize(model, params, latent: np.ndarray, plan: Plan) -> np.ndarray:
    _log_plan(plan, "g_s", (latent.shape[0] * DOWNSCALE_Y, latent.shape[1] * DOWNSCALE_Y))
    return synthesis_tiles(model, params, latent, plan)


def reconstruct(model, params, y_hat, hyper, level, uniform, whole, budget: int | None = None):
    """api._reconstruct (ŷ (h, w, C) at `level` -> uint8 (16h, 16w, 3)), memory-bounded.

    `whole(model, params, y_hat, hyper, level, uniform)` (api._reconstruct) runs when the
    whole image fits the budget: the same call and numbers as before.
    """
    budget = memory_budget() if budget is None else budget
    geometry = synthesis_geometry(model, _param_bytes(params))
    plan = plan_tiles(*y_hat.shape[:2], geometry, budget, "g_s")
    if plan.whole:
        return whole(model, params, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
    latent = _level_latent(model, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
    return _synthesize(model, params, np.asarray(latent), plan)


def synthesize_levels(model, params, y_hat, hyper, levels, uniforms, whole, budget=None):
    """The evaluation's batched synthesis ((B,) levels, (B, h, w, C) uniforms -> uint8
    (B, 16h, 16w, 3)), memory-bounded: `whole(model, params, y_hat, hyper, levels, uniforms)`
    when the batch fits, else one tiled g_s per item (the same numbers as `reconstruct`)."""
    budget = memory_budget() if budget is None else budget
    geometry = synthesis_geometry(model, _param_bytes(params))
    h, w = y_hat.shape[:2]
    if estimate_bytes(geometry, h, w, batch=len(levels), tile=False) <= budget:
        return whole(model, params, y_hat, hyper, levels, uniforms)
    plan = plan_tiles(h, w, geometry, budget, "g_s")
    if plan.whole:  # one image fits: today's call, one level at a time
        return np.concatenate(
            [
                whole(model, params, y_hat, hyper, levels[i : i + 1], uniforms[i : i + 1])
                for i in range(len(levels))
            ]
        )
    images = []
    for level, uniform in zip(levels, uniforms, strict=True):
        latent = _level_latent(model, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
        images.append(_synthesize(model, params, np.asarray(latent), plan))
    return np.stack(images)
