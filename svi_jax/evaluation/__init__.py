"""Rate–distortion–perception evaluation over the 16 levels (`eval.py` is its CLI).

    from svi_jax.evaluation import EvalSettings, load_model, load_dataset, run_evaluation
    results = run_evaluation(load_model("runs/tiny"), load_dataset("skimage"), "runs/tiny/eval")

Writes results.json (schema: svi_jax.evaluation.results), results.csv,
results_per_image.csv, rd_<metric>.png (svi_jax.evaluation.plots) and grid.png.
"""

from __future__ import annotations

from svi_jax.evaluation.feature_network import (
    FID_WEIGHTS_NAME,
    find_inception_weights,
    load_feature_fn,
)
from svi_jax.evaluation.pipeline import run_evaluation
from svi_jax.evaluation.results import load_curve
from svi_jax.evaluation.runner import IMAGE_METRICS, EvalOutput, EvalSettings, evaluate
from svi_jax.evaluation.sources import (
    Dataset,
    EvalInputError,
    ModelSource,
    check_outputs,
    load_config_file,
    load_dataset,
    load_model,
)

__all__ = [
    "FID_WEIGHTS_NAME",
    "IMAGE_METRICS",
    "Dataset",
    "EvalInputError",
    "EvalOutput",
    "EvalSettings",
    "ModelSource",
    "check_outputs",
    "evaluate",
    "find_inception_weights",
    "load_config_file",
    "load_curve",
    "load_dataset",
    "load_feature_fn",
    "load_model",
    "run_evaluation",
]
