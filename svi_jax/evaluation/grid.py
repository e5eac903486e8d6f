"""A PNG grid of reconstructions: rows = (image, seed), columns = original + chosen levels,
labelled (a header row names the columns, a left column names each row's image and seed)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from svi_jax.data.image_io import save_png

MAX_SIDE = 192  # each cell is downscaled (by striding) so its longer side is at most this
LABEL_BAND = 16  # px above the cells for the column names
LABEL_WIDTH = 112  # px left of the cells for the row names (18 characters of PIL's font)


def pick_levels(levels: list[int], count: int = 5) -> list[int]:
    """`count` levels spread over the evaluated ones, always with the first and the last."""
    if len(levels) <= count:
        return list(levels)
    idx = np.unique(np.round(np.linspace(0, len(levels) - 1, count)).astype(int))
    return [levels[i] for i in idx]


def _cell(image: np.ndarray) -> np.ndarray:
    step = max(1, -(-max(image.shape[:2]) // MAX_SIDE))
    return image[::step, ::step]


def reconstruction_grid(
    grid: list, levels: list[int], pad: int = 4, labels: bool = True
) -> np.ndarray:
    """uint8 (H, W, 3) image of the grid entries [(name, original, {(level, seed): rec})]:
    one row per (image, seed), columns original + `levels`; `labels` adds the header row
    ("original", "level 1", ...) and the row names ("coffee, seed 0")."""
    rows, names = [], []
    for name, original, recs in grid:
        seeds = sorted({s for (_, s) in recs})
        for seed in seeds:
            rows.append([_cell(original)] + [_cell(recs[level, seed]) for level in levels])
            names.append(f"{name}, seed {seed}")
    if not rows:
        raise ValueError("no images for the grid")
    cell_h = max(c.shape[0] for r in rows for c in r)
    cell_w = max(c.shape[1] for r in rows for c in r)
    ncols = len(rows[0])
    top, left = (LABEL_BAND, LABEL_WIDTH) if labels else (0, 0)
    canvas = np.full(
        (top + len(rows) * (cell_h + pad) + pad, left + ncols * (cell_w + pad) + pad, 3),
        255,
        np.uint8,
    )
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = top + pad + i * (cell_h + pad), left + pad + j * (cell_w + pad)
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    if not labels:
        return canvas
    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    for j, text in enumerate(["original", *(f"level {lv}" for lv in levels)]):
        draw.text((left + pad + j * (cell_w + pad), 2), text, fill=(0, 0, 0), font=font)
    for i, text in enumerate(names):
        y = top + pad + i * (cell_h + pad) + cell_h // 2
        draw.text((2, y), text[:18], fill=(0, 0, 0), font=font)
    return np.asarray(picture)


def write_grid(path, grid: list, levels: list[int]) -> pathlib.Path:
    """Writes the grid PNG atomically. Columns: original, then `pick_levels(levels)`."""
    return save_png(path, reconstruction_grid(grid, pick_levels(levels)))
