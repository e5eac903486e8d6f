"""Library callers of svi_jax.evaluation get errors in the library's words (EvalSettings
fields), eval.py keeps its flag names (--levels, --samples)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import svi_jax
from svi_jax import evaluation as ev
from svi_jax.configs import tiny


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ev.EvalSettings(levels=(0, 17)), "levels must be in 1..16, got [0, 17]"),
        (ev.EvalSettings(levels=()), "levels must be in 1..16, got []"),
        (ev.EvalSettings(samples=0), "samples must be >= 1, got 0"),
    ],
)
def test_evaluate_names_the_settings_field_not_the_flag(settings, message):
    config = tiny.get_config()
    params = svi_jax.init_params(svi_jax.build_model(config.model), jax.random.PRNGKey(0))
    source = ev.ModelSource(config, params, None, "memory", "export")
    image = np.zeros((40, 70, 3), np.uint8)
    dataset = ev.Dataset("mine", ("img0",), lambda i: image)
    with pytest.raises(ev.EvalInputError) as error:
        ev.evaluate(source, dataset, settings, progress=False)
    assert str(error.value) == message  # no "--levels": EvalSettings has no flags
    with pytest.raises(ev.EvalInputError) as error:
        ev.runner.check_settings(settings, 16)  # eval.py's call: its flag names
    assert str(error.value) == f"--{message}"
