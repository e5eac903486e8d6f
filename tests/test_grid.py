"""eval.py's grid.png (svi_jax.evaluation.grid): cells where they belong, labelled."""

import numpy as np

from svi_jax.evaluation.grid import LABEL_BAND, LABEL_WIDTH, pick_levels, reconstruction_grid


def _entries():
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    recs = {(lv, s): img() for lv in (1, 8, 16) for s in (0, 1)}
    return [("coffee", img(), recs)], recs


def test_grid_places_every_cell_and_labels_rows_and_columns():
    entries, recs = _entries()
    plain = reconstruction_grid(entries, [1, 8, 16], labels=False)
    labelled = reconstruction_grid(entries, [1, 8, 16])
    pad = 4
    assert plain.shape == (2 * (32 + pad) + pad, 4 * (48 + pad) + pad, 3)
    assert labelled.shape == (plain.shape[0] + LABEL_BAND, plain.shape[1] + LABEL_WIDTH, 3)
    # row 2 (seed 1), column 3 (level 8): the same pixels, shifted by the label bands
    y, x = pad + (32 + pad), pad + 2 * (48 + pad)
    np.testing.assert_array_equal(plain[y : y + 32, x : x + 48], recs[8, 1])
    ly, lx = y + LABEL_BAND, x + LABEL_WIDTH
    np.testing.assert_array_equal(labelled[ly : ly + 32, lx : lx + 48], recs[8, 1])
    # the bands hold text (dark pixels), the plain grid's margins do not
    assert (labelled[:LABEL_BAND, LABEL_WIDTH:] < 128).any()
    assert (labelled[LABEL_BAND:, :LABEL_WIDTH] < 128).any()


def test_pick_levels_keeps_first_and_last():
    assert pick_levels(list(range(1, 17))) == [1, 5, 9, 12, 16]
    assert pick_levels([3, 7]) == [3, 7]
