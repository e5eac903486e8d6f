"""Where g_a and g_s may be cut, how much memory a call needs, and the cheapest tiling that fits.

Both transforms are local: every Swin block mixes tokens only inside a window (shifted or
not), patch merging / pixel shuffle act on 2x2 blocks and g_s ends with a 3x3 conv. A tile of
the image (or latent) run through the unchanged transform equals the whole-image result away
from its cut edges when:
- Alignment: a tile starts at a multiple of every stage's window (in that stage's tokens), so
  its unshifted and shifted window grids coincide with the whole image's. The padding rules of
  svi_jax/nn/swin.py then agree too: a tile that touches the real bottom/right border gets the
  whole image's zero padding and shifted-window regions; a cut inside the image is the only
  difference.
- Halo: `_edge_reach` follows how far a cut edge's influence travels: an unshifted block
  spreads it to the end of its window; a shifted block makes the edge's first `shift` rows a
  region of their own (in the whole image they share windows with the rows above) and spreads
  to the end of its shifted window; 2x2 merging halves it, pixel shuffle doubles it, the 3x3
  conv adds 1 px. For the 256-px construction size (tiny and paper configs) it is 16 latent
  rows (256 px) for g_a and 12 latent rows (177 px rounded up) for g_s; one row less changes
  the result (tests/test_large_images.py).
- Windows follow MODEL.md §2's construction-size rule (as svi_jax/nn/swin.py): a stage whose
  construction grid is no larger than the window is one unshifted window of that grid.
Only the model config is read here, never module internals.

Memory model (peak RSS growth of one call on XLA:CPU, jax 0.10.2, measured with VmHWM at 1-4 MP;
`compiled.memory_analysis()` undercounts it ~1.5-4.5x because the CPU runtime's fused kernels
allocate their own scratch): with attention chunked over windows, ~ACTIVATION_FACTOR x 4 bytes
x the widest per-pixel activation; without chunking, plus the (heads, N, N) logits of the
first (last) stage. Units: latent rows / columns (16 px) unless named otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import os

from svi_jax.data.image_io import DataError
from svi_jax.nn.model import DOWNSCALE_Y, ProgressiveSIC

GIB = 2**30
DEFAULT_BUDGET_GIB = 3.0  # one g_a / g_s call (estimate); tiny at 24 MP peaks near 3.3 GiB RSS
BUDGET_ENV = "SVI_MEMORY_BUDGET_GIB"
TILE_CHUNK_WINDOWS = 256  # attention windows per chunk in tiles (model.attention_chunk_windows)
# Peak RSS growth per pixel / (4 B x widest activation per pixel), chunked attention, tiny
# config at 2 and 4 MP: g_a 3.06, g_s 3.13; paper config at 0.5 and 1 MP: g_a 2.97, g_s 3.1.
ACTIVATION_FACTOR = 3.3
LOGITS_FACTOR = 1.0  # unchunked: measured tiny g_a +950 B/px over chunked = 0.93 logits tensors
OUTCONV_REACH_PX = 1  # g_s's final 3x3 conv (MODEL.md §2; an architecture constant, not a field)
COMPILE_COST_PX = 3_000_000  # one compilation costs about as much as 3 MP of tiny g_a on CPU


class MemoryBudgetError(DataError):
    """The image needs more memory than the budget allows, even in the smallest tiles."""


def memory_budget() -> int:
    """Bytes one transform call may use: $SVI_MEMORY_BUDGET_GIB (GiB) or DEFAULT_BUDGET_GIB."""
    text = os.environ.get(BUDGET_ENV, "")
    try:
        gib = float(text) if text else DEFAULT_BUDGET_GIB
    except ValueError:
        raise DataError(f"{BUDGET_ENV}={text!r} is not a number of GiB") from None
    if not gib > 0:
        raise DataError(f"{BUDGET_ENV}={text!r} must be a positive number of GiB")
    return int(gib * GIB)


def tile_model(model: ProgressiveSIC) -> ProgressiveSIC:
    """The model tiles run: attention chunked over windows (same arithmetic per window, a
    third of the memory on CPU), when the model has that execution-only field."""
    if getattr(model, "attention_chunk_windows", None) == 0:
        return model.clone(attention_chunk_windows=TILE_CHUNK_WINDOWS)
    return model


# --- geometry from the config ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Geometry:
    """How one transform may be cut and what a call costs (latent units, bytes)."""

    align: int  # tile starts are multiples of this (every window grid coincides)
    halo: int  # rows next to a cut edge that may differ from whole-image processing
    whole_bytes_per_pixel: float  # the model as configured (today's whole-image call)
    tile_bytes_per_pixel: float  # `tile_model(model)`
    fixed_bytes: int = 0  # parameters (an argument of every call)


def _stage_window(model: ProgressiveSIC, scale: int) -> tuple[int, int]:
    """(window, shift of the odd blocks) of a stage at 1/scale of the image (MODEL.md §2)."""
    h0, w0 = model.construction_size
    side = min(h0 // scale, w0 // scale)
    if side <= model.window:
        return side, 0
    return model.window, model.window // 2


def _edge_reach(d: int, depth: int, window: int, shift: int) -> int:
    """Rows from a cut edge that may differ after `depth` blocks, given `d` before them."""
    for i in range(depth):
        if i % 2 == 0 or shift == 0:  # unshifted: the whole window of a differing row
            d = -(-d // window) * window
        elif d <= shift:  # shifted: the edge's first `shift` rows form their own region
            d = shift
        else:
            d = shift + -(-(d - shift) // window) * window
    return d


def _bytes_per_pixel(model, widest: float, heads: int, window: int, tokens_per_px: float):
    tile = 4.0 * ACTIVATION_FACTOR * widest
    chunked = getattr(model, "attention_chunk_windows", 0) > 0
    logits = 0.0 if chunked else LOGITS_FACTOR * 4.0 * heads * window**2 * tokens_per_px
    return tile + logits, tile


def analysis_geometry(model: ProgressiveSIC, param_bytes: int = 0) -> Geometry:
    """g_a: image (multiple of 16 px) -> latent; stage s runs at 1/2^(s+1) of the image."""
    d, align_px, widest = 0, DOWNSCALE_Y, 0.0
    for s, depth in enumerate(model.analysis_depths):
        scale = 2 ** (s + 1)
        window, shift = _stage_window(model, scale)
        if s > 0:
            d = -(-d // 2)  # 2x2 patch merging
        d = _edge_reach(d, depth, window, shift)
        align_px = math.lcm(align_px, window * scale)
        widest = max(widest, model.analysis_dims[s] * (1 + model.mlp_ratio) / scale**2)
    window0 = _stage_window(model, 2)[0]
    whole, tile = _bytes_per_pixel(model, widest, model.analysis_heads[0], window0, 1 / 4)
    return Geometry(align_px // DOWNSCALE_Y, d, whole, tile, param_bytes)


def synthesis_geometry(model: ProgressiveSIC, param_bytes: int = 0) -> Geometry:
    """g_s: latent -> image; stage i runs at 16/2^i px per token, then a x2 pixel shuffle."""
    d, align, widest = 0, 1, 0.0
    n = len(model.synthesis_depths)
    for i, depth in enumerate(model.synthesis_depths):
        scale = DOWNSCALE_Y // 2**i
        window, shift = _stage_window(model, scale)
        d = 2 * _edge_reach(d, depth, window, shift)  # then pixel shuffle
        per_latent = DOWNSCALE_Y // scale  # tokens per latent row at this stage
        align = math.lcm(align, window // math.gcd(window, per_latent))
        widest = max(widest, model.synthesis_dims[i] * (1 + model.mlp_ratio) / scale**2)
    last = DOWNSCALE_Y // 2**n  # px per token after the last pixel shuffle (1)
    widest = max(widest, model.synthesis_dims[-1] / last**2)
    halo = -(-(d * last + OUTCONV_REACH_PX) // DOWNSCALE_Y)
    window_last = _stage_window(model, 2 * last)[0]
    whole, tile = _bytes_per_pixel(model, widest, model.synthesis_heads[-1], window_last, 1 / 4)
    return Geometry(align, halo, whole, tile, param_bytes)


def estimate_bytes(geometry: Geometry, rows: int, cols: int, batch: int = 1, tile=True) -> int:
    """Estimated peak bytes of one call on rows x cols latent positions (`batch` images)."""
    per_px = geometry.tile_bytes_per_pixel if tile else geometry.whole_bytes_per_pixel
    return int(geometry.fixed_bytes + per_px * rows * cols * DOWNSCALE_Y**2 * batch)


# --- planning -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Band:
    """One cut of an axis: compute [start, stop), keep [keep_start, keep_stop) (latent)."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_axis(n: int, length: int, geometry: Geometry) -> list[Band]:
    """Cut n latent rows into bands of `length` rows (a multiple of align; the last band
    ends at n and may be shorter), each keeping the rows at least `halo` from a cut edge."""
    if n <= length:
        return [Band(0, n, 0, n)]
    a, halo = geometry.align, geometry.halo
    stride = (length - 2 * halo) // a * a
    if length % a or stride < a:
        raise ValueError(f"band length {length} does not fit halo {halo} and alignment {a}")
    bands, k = [], 0
    while True:
        start = k * stride
        keep_start = 0 if k == 0 else start + halo
        if start + length >= n:
            bands.append(Band(start, n, keep_start, n))
            return bands
        bands.append(Band(start, start + length, keep_start, (k + 1) * stride + halo))
        k += 1


@dataclasses.dataclass(frozen=True)
class Plan:
    rows: list[Band]
    cols: list[Band]
    estimate: int  # estimated bytes of the largest call

    @property
    def whole(self) -> bool:
        return len(self.rows) == 1 and len(self.cols) == 1

    def shapes(self) -> set[tuple[int, int]]:
        """Distinct tile shapes (one compilation each)."""
        return {(r.stop - r.start, c.stop - c.start) for r in self.rows for c in self.cols}

    def tiles(self):
        for r in self.rows:
            for c in self.cols:
                yield r, c


def _cost(rows: list[Band], cols: list[Band]) -> float:
    computed = sum(r.stop - r.start for r in rows) * sum(c.stop - c.start for c in cols)
    shapes = len({r.stop - r.start for r in rows}) * len({c.stop - c.start for c in cols})
    return computed * DOWNSCALE_Y**2 + COMPILE_COST_PX * shapes


def plan_tiles(
    n_rows: int, n_cols: int, geometry: Geometry, budget: int, what: str, batch: int = 1
) -> Plan:
    """The tiling of an n_rows x n_cols latent grid that fits `budget` bytes per call, least
    computation (halo recomputed, compilations) first; one whole call when that fits.

    Raises MemoryBudgetError, naming the estimates, when even the smallest tile does not fit.
    """
    whole = estimate_bytes(geometry, n_rows, n_cols, batch, tile=False)
    if whole <= budget:
        return Plan([Band(0, n_rows, 0, n_rows)], [Band(0, n_cols, 0, n_cols)], whole)
    a = geometry.align
    smallest = (2 * geometry.halo // a + 1) * a  # one aligned kept unit between two halos
    per_position = estimate_bytes(geometry, 1, 1, batch) - geometry.fixed_bytes
    room = (budget - geometry.fixed_bytes) // max(per_position, 1)
    best = None
    for col_len in sorted({n_cols, *range(smallest, n_cols, a)}, reverse=True):
        row_len = room // col_len
        row_len = n_rows if row_len >= n_rows else row_len // a * a
        if row_len < min(smallest, n_rows):
            continue
        rows, cols = plan_axis(n_rows, row_len, geometry), plan_axis(n_cols, col_len, geometry)
        cost = _cost(rows, cols)
        if best is None or cost < best[0]:
            best = (cost, rows, cols, estimate_bytes(geometry, row_len, col_len, batch))
    if best is None:
        need = estimate_bytes(geometry, min(smallest, n_rows), min(smallest, n_cols), batch)
        h, w = n_rows * DOWNSCALE_Y, n_cols * DOWNSCALE_Y
        raise MemoryBudgetError(
            f"a {h}x{w} px (padded) image needs about {whole / GIB:.1f} GiB for {what} in one "
            f"call and at least {need / GIB:.2f} GiB in tiles, over the memory budget of "
            f"{budget / GIB:.2f} GiB (set {BUDGET_ENV}, or use a smaller image)"
        )
    return Plan(best[1], best[2], best[3])
