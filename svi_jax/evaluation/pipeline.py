"""One evaluation run: evaluate, then write JSON + CSV, the plots (drawn from the JSON) and the
grid (`eval.py` calls `run_evaluation`)."""

from __future__ import annotations

import pathlib

from svi_jax.evaluation.grid import pick_levels, write_grid
from svi_jax.evaluation.plots import plot_results
from svi_jax.evaluation.results import build_results, load_curve, write_csv, write_json
from svi_jax.evaluation.runner import EvalSettings, evaluate
from svi_jax.evaluation.sources import Dataset, ModelSource


def run_evaluation(
    source: ModelSource,
    dataset: Dataset,
    out_dir,
    settings: EvalSettings | None = None,
    compare=(),
    feature_fn=None,
    progress: bool = True,
    name: str | None = None,
    nets: dict | None = None,
) -> dict:
    """Evaluate, then write JSON + CSV, draw the plots from the JSON, and write the grid."""
    out_dir = pathlib.Path(out_dir)
    settings = settings or EvalSettings()
    compare = list(compare)
    for path in compare:  # fail on a bad --compare file before the long run
        load_curve(path)
    output = evaluate(source, dataset, settings, feature_fn, progress, nets=nets)
    results = build_results(output, source, dataset, settings, name)
    levels = results["settings"]["levels"]
    if output.grid:
        write_grid(out_dir / "grid.png", output.grid, levels)
        results["grid"] = {
            "file": "grid.png",
            "columns": ["original", *pick_levels(levels)],
            "rows": [[n, s] for n, _, recs in output.grid for s in sorted({s for _, s in recs})],
        }
    write_json(out_dir / "results.json", results)
    write_csv(out_dir, results)
    plot_results(results, out_dir, compare)
    return results
