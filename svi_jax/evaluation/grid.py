"""A PNG grid of reconstructions: rows = (image, seed), columns = original + chosen levels."""

from __future__ import annotations

import pathlib

import numpy as np

from svi_jax.data.image_io import save_png

MAX_SIDE = 192  # each cell is downscaled (by striding) so its longer side is at most this


def pick_levels(levels: list[int], count: int = 5) -> list[int]:
    """`count` levels spread over the evaluated ones, always with the first and the last."""
    if len(levels) <= count:
        return list(levels)
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, count)).astype(int))
    return [levels[i] for i in idx]


def _cell(image: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(image.shape[:2]) // MAX_SIDE))
    return image[::step, ::step]


def reconstruction_grid(grid: list, levels: list[int], pad: int = 4) -> np.ndarray:
    """uint8 image of the grid entries [(name, original, {(level, seed): rec})]."""
    rows = []
    for _, original, recs in grid:
        seeds = sorted({s for (_, s) in recs})
        for seed in seeds:
            cells = [_cell(original)] + [_cell(recs[level, seed]) for level in levels]
            rows.append(cells)
    if not rows:
        raise ValueError("no images for the grid")
    cell_h = max(c.shape[0] for r in rows for c in r)
    cell_w = max(c.shape[1] for r in rows for c in r)
    ncols = len(rows[0])
    canvas = np.full(
        (len(rows) * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), 255, np.uint8
    )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = pad + i * (cell_h + pad), pad + j * (cell_w + pad)
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return canvas


def write_grid(path, grid: list, levels: list[int]) -> pathlib.Path:
    """Writes the grid PNG atomically. Columns: original, then `pick_levels(levels)`."""
    return save_png(path, reconstruction_grid(grid, pick_levels(levels)))
