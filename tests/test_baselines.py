"""Every file in baselines/ is a curve eval.py --compare can draw, with its source named; the
demo's measured curve is the one configs/demo.py's docstring quotes."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from svi_jax.configs import demo
from svi_jax.evaluation.results import load_curve

BASELINES = sorted((pathlib.Path(__file__).parents[1] / "baselines").glob("*.json"))


def test_there_is_a_baseline():
    assert BASELINES, "baselines/ holds no JSON curve"


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.name)
def test_baseline_is_a_named_rate_ordered_curve(path):
    data = json.loads(path.read_text())
    assert str(data.get("source", "")).strip(), f"{path.name} does not name its source"
    curve = load_curve(path)["curve"]
    bpp = np.asarray(curve["bpp"], float)
    assert len(bpp) >= 2 and np.all(np.isfinite(bpp)) and np.all(np.diff(bpp) > 0), path.name
    for metric, values in curve.items():
        assert len(values) == len(bpp), f"{path.name}: {metric} has {len(values)} points"


def test_demo_baseline_is_what_the_demo_config_says_it_prints():
    curve = load_curve(pathlib.Path(__file__).parents[1] / "baselines" / "demo.json")["curve"]
    assert len(curve["bpp"]) == 16  # all levels
    docstring = demo.__doc__
    for level in (1, 8, 16):
        bpp, psnr = curve["bpp"][level - 1], curve["psnr"][level - 1]
        quoted = f"level {level}: {bpp:.3f} bpp, {psnr:.2f} dB"
        assert quoted in docstring, f"configs/demo.py should quote {quoted!r}"
