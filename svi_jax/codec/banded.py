"""Memory-bounded analysis g_a and synthesis g_s for large images (row bands or tiles + halo).

A 24-megapixel photo needs ~7.7 GB of XLA temporaries for the tiny model's g_a on CPU (and
~56 GB for the paper model). Both transforms are local: every Swin block mixes tokens only
inside a window (shifted or not), patch merging / pixel shuffle act on 2x2 blocks and g_s ends
with a 3x3 conv. So the image (or latent) is cut into overlapping bands, or tiles when one
full-width band does not fit, each run through the unchanged transform
(`model.apply(..., method=ProgressiveSIC.analysis / synthesis)`, a black box here), and only the
rows/columns far enough from the band's cut edges are kept.

Equality with whole-image processing (within float rounding; tests/test_large_images.py):
- Alignment: a band starts at a multiple of every stage's window (in that stage's tokens), so
  the unshifted and shifted window grids of the band coincide with the whole image's. The
  swin.py padding semantics then agree too: a band that touches the real bottom/right border
  gets exactly the whole image's zero padding and shifted-window regions; a band edge inside the
  image is the only difference.
- Halo: `_edge_reach` follows how far the influence of a cut edge travels (an unshifted block
  spreads it to the end of its window, a shifted block first makes the edge's `shift` rows a
  region of their own and then spreads to the end of its shifted window, 2x2 merging halves
  it, pixel shuffle doubles it, the 3x3 conv adds 1 px). Rows farther than that from a cut
  edge are bit-for-bit the same computation up to XLA's summation order. For the 256-px
  construction size (both configs): 16 latent rows (256 px) for g_a, 12 for g_s.
- The window rule is the construction-size rule of SPEC §2 (svi_jax/nn/swin.py): a stage whose
  construction grid is no larger than the window uses that grid as one unshifted window.

Memory: activations of one call are estimated per image pixel from the model config
(`bytes_per_pixel`, fitted to XLA:CPU `compiled.memory_analysis()` on both configs). An image
whose whole-image estimate fits the budget takes today's single call (same speed, same
numbers); otherwise the plan with the least recomputed halo whose tiles fit is used, with at
most two tile heights and two widths (so at most four compilations). If even the smallest
useful tile does not fit, `MemoryBudgetError` (one line, with the estimate) is raised before
any network runs. The budget is $SVI_MEMORY_BUDGET_GIB (GiB) or `DEFAULT_BUDGET_GIB`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.data.image_io import DataError
from svi_jax.forward import compose_level_latent, sample_details
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC

log = logging.getLogger(__name__)

GIB = 2**30
DEFAULT_BUDGET_GIB = 3.0  # activations of one g_a / g_s call; ~4 GiB peak RSS for 24 MP, tiny
BUDGET_ENV = "SVI_MEMORY_BUDGET_GIB"
# Peak XLA:CPU temporaries per pixel / (4 bytes x the widest per-pixel activation) measured
# with compiled.memory_analysis() (jax 0.10.2, 256^2 to 1024^2): tiny g_a 2.02, g_s 1.82;
# paper g_a 1.83, g_s 1.80. Rounded up so the estimate stays an upper bound.
ACTIVATION_FACTOR = 2.1
# Architecture constants (SPEC §2), not config fields: PatchEmbed is a 2x2/stride-2 conv, each
# later g_a stage starts with 2x2 patch merging, each g_s stage ends with a x2 pixel shuffle,
# and g_s ends with a 3x3 conv (1 px of reach).
OUTCONV_REACH_PX = 1


class MemoryBudgetError(DataError):
    """The image needs more memory than the budget allows, even in the smallest tiles."""


def memory_budget() -> int:
    """Bytes of activations one transform call may use ($SVI_MEMORY_BUDGET_GIB or default)."""
    text = os.environ.get(BUDGET_ENV, "")
    try:
        gib = float(text) if text else DEFAULT_BUDGET_GIB
    except ValueError:
        raise DataError(f"{BUDGET_ENV}={text!r} is not a number of GiB") from None
    if not gib > 0:
        raise DataError(f"{BUDGET_ENV}={text!r} must be positive")
    return int(gib * GIB)


# --- geometry from the config ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Geometry:
    """How one transform may be cut. Units: latent rows/columns (16 image pixels)."""

    align: int  # band starts are multiples of this (every stage's window grid coincides)
    halo: int  # rows next to a cut edge that differ from whole-image processing
    bytes_per_pixel: float  # estimated peak activation bytes per image pixel
    fixed_bytes: int  # parameters (arguments of every call)


def _stage_window(model: ProgressiveSIC, scale: int) -> tuple[int, int]:
    """(window, shift of the odd blocks) of a stage at 1/scale resolution (SPEC §2 rule)."""
    h0, w0 = model.construction_hw
    side = min(h0 // scale, w0 // scale)
    if side <= model.window:
        return side, 0
    return model.window, model.window // 2


def _edge_reach(d: int, depth: int, window: int, shift: int) -> int:
    """Rows from a cut edge that may differ after `depth` blocks, `d` before them."""
    for i in range(depth):
        if i % 2 == 0 or shift == 0:  # unshifted: the whole window of a differing row
            d = -(-d // window) * window
        elif d <= shift:  # shifted: the edge's first `shift` rows are a region of their own
            d = shift
        else:
            d = shift + -(-(d - shift) // window) * window
    return d


def _per_pixel_bytes(widest: float) -> float:
    return 4.0 * ACTIVATION_FACTOR * widest


def analysis_geometry(model: ProgressiveSIC, params: dict | None = None) -> Geometry:
    """g_a: image (multiple of 16 px) -> latent; stage s runs at 1/2^(s+1)."""
    d, align_px, widest = 0, DOWNSCALE_Y, 0.0
    for s, depth in enumerate(model.analysis_depths):
        scale = 2 ** (s + 1)
        window, shift = _stage_window(model, scale)
        if s > 0:
            d = -(-d // 2)  # 2x2 patch merging
        d = _edge_reach(d, depth, window, shift)
        align_px = math.lcm(align_px, window * scale)
        widest = max(widest, model.analysis_dims[s] * (1 + model.mlp_ratio) / scale**2)
    return Geometry(align_px // DOWNSCALE_Y, d, _per_pixel_bytes(widest), _param_bytes(params))


def synthesis_geometry(model: ProgressiveSIC, params: dict | None = None) -> Geometry:
    """g_s: latent -> image; stage i runs at 1/(16/2^i), then a x2 pixel shuffle."""
    d, align, widest = 0, 1, 0.0
    n = len(model.synthesis_depths)
    for i, depth in enumerate(model.synthesis_depths):
        scale = DOWNSCALE_Y // 2**i
        window, shift = _stage_window(model, scale)
        d = 2 * _edge_reach(d, depth, window, shift)  # then pixel shuffle
        tokens_per_latent = DOWNSCALE_Y // scale
        align = math.lcm(align, window // math.gcd(window, tokens_per_latent))
        widest = max(widest, model.synthesis_dims[i] * (1 + model.mlp_ratio) / scale**2)
    # after the last pixel shuffle: one token of synthesis_dims[-1] channels per pixel
    widest = max(widest, model.synthesis_dims[-1] / (DOWNSCALE_Y // 2**n) ** 2)
    d = d * (DOWNSCALE_Y // 2**n) + OUTCONV_REACH_PX  # pixels
    halo = -(-d // DOWNSCALE_Y)
    return Geometry(align, halo, _per_pixel_bytes(widest), _param_bytes(params))


def _param_bytes(params: dict | None) -> int:
    if params is None:
        return 0
    return int(sum(np.dtype(a.dtype).itemsize * np.prod(a.shape) for a in jax.tree.leaves(params)))


def estimate_bytes(geometry: Geometry, rows: int, cols: int, batch: int = 1) -> int:
    """Estimated peak bytes of one call on `rows` x `cols` latent positions."""
    pixels = rows * cols * DOWNSCALE_Y**2 * batch
    return int(geometry.fixed_bytes + geometry.bytes_per_pixel * pixels)


# --- planning -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Band:
    """One cut of an axis (latent units): compute [start, stop), keep [keep_start, keep_stop)."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_axis(n: int, length: int, geometry: Geometry) -> list[Band]:
    """Cut an axis of n latent rows into bands of at most `length` (a multiple of align).

    Every band but the last has exactly `length` rows; the last ends at n (one more shape).
    """
    if n <= length:
        return [Band(0, n, 0, n)]
    a, halo = geometry.align, geometry.halo
    stride = (length - 2 * halo) // a * a
    if stride < a:
        raise ValueError(f"band length {length} leaves no kept rows (halo {halo}, align {a})")
    bands, k = [], 0
    while True:
        start = k * stride
        keep_start = 0 if k == 0 else start + halo
        if start + length >= n:
            bands.append(Band(start, n, keep_start, n))
            return bands
        bands.append(Band(start, start + length, keep_start, (k + 1) * stride + halo))
        k += 1


def _computed(bands: list[Band]) -> int:
    return sum(b.stop - b.start for b in bands)


@dataclasses.dataclass(frozen=True)
class Plan:
    rows: list[Band]
    cols: list[Band]
    estimate: int  # bytes of the largest call

    @property
    def whole(self) -> bool:
        return len(self.rows) == 1 and len(self.cols) == 1


def plan_tiles(
    n_rows: int, n_cols: int, geometry: Geometry, budget: int, what: str, batch: int = 1
) -> Plan:
    """The tiling of an n_rows x n_cols latent grid with the least computed area that fits.

    Raises MemoryBudgetError (before any work) when even the smallest useful tile does not fit.
    """
    whole = estimate_bytes(geometry, n_rows, n_cols, batch)
    if whole <= budget:
        return Plan([Band(0, n_rows, 0, n_rows)], [Band(0, n_cols, 0, n_cols)], whole)
    a = geometry.align
    smallest = (2 * geometry.halo // a + 1) * a  # one aligned kept unit between two halos
    best = None
    col_lengths = {n_cols} | set(range(smallest, n_cols, a))
    for col_len in sorted(col_lengths, reverse=True):
        per_row = estimate_bytes(geometry, 1, col_len, batch) - geometry.fixed_bytes
        row_len = (budget - geometry.fixed_bytes) // max(per_row, 1)
        row_len = n_rows if row_len >= n_rows else row_len // a * a
        if row_len < min(smallest, n_rows):
            continue
        rows, cols = plan_axis(n_rows, row_len, geometry), plan_axis(n_cols, col_len, geometry)
        area = _computed(rows) * _computed(cols)
        if best is None or area < best[0]:
            best = (area, rows, cols, estimate_bytes(geometry, row_len, col_len, batch))
    if best is None:
        tile = min(smallest, n_rows) * min(smallest, n_cols)
        need = estimate_bytes(geometry, 1, tile, batch)
        h, w = n_rows * DOWNSCALE_Y, n_cols * DOWNSCALE_Y
        raise MemoryBudgetError(
            f"a {h}x{w} image needs about {whole / GIB:.1f} GiB for {what} at once and at "
            f"least {need / GIB:.2f} GiB in tiles, over the memory budget of "
            f"{budget / GIB:.2f} GiB (raise {BUDGET_ENV} or use a smaller image)"
        )
    _, rows, cols, estimate = best
    return Plan(rows, cols, estimate)


def check_synthesis(model: ProgressiveSIC, height: int, width: int, budget: int | None = None):
    """Raise MemoryBudgetError now if decoding an height x width image cannot fit (no work)."""
    ph, pw = -(-height // DOWNSCALE_Z) * DOWNSCALE_Z, -(-width // DOWNSCALE_Z) * DOWNSCALE_Z
    budget = memory_budget() if budget is None else budget
    plan_tiles(ph // DOWNSCALE_Y, pw // DOWNSCALE_Y, synthesis_geometry(model), budget, "g_s")


# --- banded execution ------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames="model")
def _analysis_tile(model: ProgressiveSIC, params, x):
    """g_a of one tile: float32 (1, h, w, 3) -> (h/16, w/16, C)."""
    log.info("compiling banded g_a for a %s tile", x.shape[1:3])
    return model.apply({"params": params}, x, method=ProgressiveSIC.analysis)[0]


@functools.partial(jax.jit, static_argnames="model")
def _hyper_round(model: ProgressiveSIC, params, y, medians):
    """The rest of api._analyze once y is known: (round(y), round(h_a(y) − median))."""
    z = model.apply({"params": params}, y[None], method=ProgressiveSIC.hyper_analysis)
    return jnp.round(y), jnp.round(z - medians)[0]


@functools.partial(jax.jit, static_argnames="model")
def _synthesis_tile(model: ProgressiveSIC, params, latent):
    """g_s of one tile, as api._reconstruct rounds it: (1, h, w, C) -> uint8 (16h, 16w, 3)."""
    log.info("compiling banded g_s for a %s latent tile", latent.shape[1:3])
    x = model.apply({"params": params}, latent, method=ProgressiveSIC.synthesis)[0]
    return jnp.round(x * 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames="model")
def _level_latent(model: ProgressiveSIC, y_hat, hyper, level, uniform):
    """The latent g_s decodes at `level` (api._reconstruct's first two lines)."""
    details = sample_details(hyper[..., model.latent_channels :], uniform)
    return compose_level_latent(y_hat, details, level, model.slice_width)


def _tiles(plan: Plan):
    for r in plan.rows:
        for c in plan.cols:
            yield r, c


def _log_plan(plan: Plan, what: str, shape) -> None:
    log.info(
        "%s of %s in %d x %d tiles (largest ~%.2f GiB)",
        what,
        shape,
        len(plan.rows),
        len(plan.cols),
        plan.estimate / GIB,
    )


def analyze(model, params, image: np.ndarray, medians, whole, budget: int | None = None):
    """uint8 (H, W, 3) -> (round(y), round(z − median)) as api._analyze, memory-bounded.

    The image is zero-padded bottom/right to a multiple of 64 (as the codec always did).
    `whole(model, params, x, medians)` is api._analyze, used when the whole image fits.
    """
    h, w = image.shape[:2]
    ph, pw = -(-h // DOWNSCALE_Z) * DOWNSCALE_Z, -(-w // DOWNSCALE_Z) * DOWNSCALE_Z
    budget = memory_budget() if budget is None else budget
    plan = plan_tiles(
        ph // DOWNSCALE_Y, pw // DOWNSCALE_Y, analysis_geometry(model, params), budget, "g_a"
    )
    if plan.whole:
        x = np.pad(image.astype(np.float32) / 255.0, ((0, ph - h), (0, pw - w), (0, 0)))
        return whole(model, params, jnp.asarray(x)[None], medians)
    _log_plan(plan, "g_a", (h, w))
    y = analysis_tiles(model, params, image, plan)
    return _hyper_round(model, params, jnp.asarray(y), medians)


def analysis_tiles(model, params, image: np.ndarray, plan: Plan) -> np.ndarray:
    """g_a of uint8 (H, W, 3) tile by tile -> y (h, w, C) float32 on the plan's latent grid
    (the image read as zero-padded bottom/right to it, as the whole-image path pads)."""
    y = None
    s = DOWNSCALE_Y
    for r, c in _tiles(plan):
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
    """g_s of a latent (h, w, C) tile by tile -> uint8 (16h, 16w, 3) (api._reconstruct's
    rounding)."""
    out = np.zeros((latent.shape[0] * DOWNSCALE_Y, latent.shape[1] * DOWNSCALE_Y, 3), np.uint8)
    s = DOWNSCALE_Y
    for r, c in _tiles(plan):
        part = jnp.asarray(latent[None, r.start : r.stop, c.start : c.stop])
        tile = np.asarray(_synthesis_tile(model, params, part))
        out[r.keep_start * s : r.keep_stop * s, c.keep_start * s : c.keep_stop * s] = tile[
            (r.keep_start - r.start) * s : (r.keep_stop - r.start) * s,
            (c.keep_start - c.start) * s : (c.keep_stop - c.start) * s,
        ]
    return out


def synthesize(model, params, latent: np.ndarray, budget: int | None = None) -> np.ndarray:
    """g_s of a latent (h, w, C) -> uint8 (16h, 16w, 3), tiled to the budget."""
    budget = memory_budget() if budget is None else budget
    h, w = latent.shape[:2]
    plan = plan_tiles(h, w, synthesis_geometry(model, params), budget, "g_s")
    if not plan.whole:
        _log_plan(plan, "g_s", (h * DOWNSCALE_Y, w * DOWNSCALE_Y))
    return synthesis_tiles(model, params, latent, plan)


def reconstruct(model, params, y_hat, hyper, level, uniform, whole, budget: int | None = None):
    """api._reconstruct (uint8 (16h, 16w, 3) image of ŷ at `level`), memory-bounded.

    `whole(model, params, y_hat, hyper, level, uniform)` is api._reconstruct, used when the
    whole image fits the budget (today's single call and numbers).
    """
    budget = memory_budget() if budget is None else budget
    h, w = y_hat.shape[:2]
    plan = plan_tiles(h, w, synthesis_geometry(model, params), budget, "g_s")
    if plan.whole:
        return whole(model, params, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
    latent = _level_latent(model, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
    return synthesize(model, params, np.asarray(latent), budget)


def synthesize_levels(model, params, y_hat, hyper, levels, uniforms, whole, budget=None):
    """evaluation's batched `_synthesize` ((B,) levels, (B, h, w, C) uniforms -> uint8
    (B, 16h, 16w, 3)), memory-bounded: one call for the batch when it fits, else one tiled
    reconstruction per item. `whole` is the batched function."""
    budget = memory_budget() if budget is None else budget
    h, w = y_hat.shape[:2]
    geometry = synthesis_geometry(model, params)
    if estimate_bytes(geometry, h, w, batch=len(levels)) <= budget:
        return whole(model, params, y_hat, hyper, levels, uniforms)
    images = []
    for level, uniform in zip(levels, uniforms, strict=True):
        latent = _level_latent(model, jnp.asarray(y_hat), hyper, jnp.int32(level), uniform)
        images.append(synthesize(model, params, np.asarray(latent), budget))
    return np.stack(images)
