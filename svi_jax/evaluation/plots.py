"""Rate–distortion–perception plots drawn from results.json (the separate plot step).

    python -m svi_jax.evaluation.plots runs/tiny/eval/results.json [--compare other.json ...]

One PNG per metric: real bpp against the metric, one curve over the evaluated levels (each point
labelled with its level), plus the estimated-bpp curve dashed, plus reference curves.
"""

from __future__ import annotations

import argparse
import io
import math
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from svi_jax.evaluation.results import load_curve, load_results, write_atomic  # noqa: E402
from svi_jax.evaluation.sources import EvalInputError  # noqa: E402
from svi_jax.safety import one_line  # noqa: E402

LABELS = {
    "psnr": "PSNR (dB) ↑",
    "ms_ssim": "MS-SSIM ↑",
    "ms_ssim_db": "MS-SSIM (dB) ↑",
    "lpips_alex": "LPIPS-alex ↓",
    "lpips_vgg": "LPIPS-vgg ↓",
    "dists": "DISTS ↓",
}


def _label(metric: str) -> str:
    """Axis label: fid_299 -> "FID, 299-px patches ↓", kid_256_mean -> "KID, 256-px ... ↓"."""
    if metric in LABELS:
        return LABELS[metric]
    kind, _, rest = metric.partition("_")
    if kind in ("fid", "kid"):
        return f"{kind.upper()}, {rest.split('_')[0]}-px patches ↓"
    return metric


def _title(results: dict) -> str:
    """The dataset as a short title: a folder's name, not its full path."""
    source = str(results["dataset"]["source"])
    if "/" in source and not source.startswith("tfds:"):
        source = pathlib.PurePath(source).name or source
    if len(source) > 40:
        source = "…" + source[-39:]
    return f"{source} ({results['dataset']['num_images']} images)"


# Least y margin around the data, per metric: a curve that is flat within noise must look flat,
# not fill the axis (e.g. PSNR 12.41-12.44 dB over 16 levels is a model that ignores its latent).
Y_MARGIN = {"psnr": 0.5, "ms_ssim_db": 0.5, "ms_ssim": 0.01, "lpips_alex": 0.01, "lpips_vgg": 0.01}
Y_MARGIN_DEFAULT = 0.01  # other metrics (DISTS, FID, KID): at least this, in their own units


def y_limits(metric: str, values) -> tuple[float, float]:
    """(bottom, top) of the y-axis: the data range widened so that the axis reaches at least
    Y_MARGIN[metric] below the lowest and above the highest point (PSNR: 0.5 dB), and 5% of
    the range beyond both ends otherwise (matplotlib's own margin)."""
    lo, hi = min(values), max(values)
    pad = max(Y_MARGIN.get(metric, Y_MARGIN_DEFAULT), 0.05 * (hi - lo))
    return lo - pad, hi + pad


def _finite(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys, strict=False) if _ok(x) and _ok(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _ok(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def plot_metric(results: dict, metric: str, compare: list[dict], path) -> pathlib.Path | None:
    fig = metric_figure(results, metric, compare)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_atomic(path, buf.getvalue())


def metric_figure(results: dict, metric: str, compare: list[dict]):
    """The matplotlib figure of one metric against real bpp, or None without finite values."""
    rows = results["levels"]
    xs, ys = _finite([r["bpp"] for r in rows], [r.get(metric) for r in rows])
    if not ys:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=120)
    ax.plot(xs, ys, "o-", label=f"{results['name']} (real bpp)")
    shown = list(ys)
    spread = [r.get(f"{metric}_sample_std") for r in rows]
    if any(_ok(s) for s in spread):  # M > 1: ±1 std over the detail samples (the synset)
        pts = [(r["bpp"], r[metric], s) for r, s in zip(rows, spread, strict=True)]
        pts = [p for p in pts if _ok(p[0]) and _ok(p[1]) and _ok(p[2])]
        ax.errorbar(*zip(*pts, strict=True), fmt="none", ecolor="C0", alpha=0.5, capsize=2)
        shown += [y + d for _, y, s in pts for d in (-s, s)]
    xe, ye = _finite([r["bpp_est"] for r in rows], [r.get(metric) for r in rows])
    ax.plot(xe, ye, "--", color="gray", alpha=0.7, label="same, estimated bpp")
    for row in rows:
        x, y = row["bpp"], row.get(metric)
        if _ok(x) and _ok(y):  # the level next to its own point, NaN rows skipped
            ax.annotate(
                str(row["level"]), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points"
            )
    for ref in compare:
        cx, cy = _finite(ref["curve"]["bpp"], ref["curve"].get(metric, []))
        if cy:
            ax.plot(cx, cy, "s-", markersize=3, label=ref["name"])
            shown += cy
    ax.set_ylim(*y_limits(metric, shown))
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(_label(metric))
    ax.set_title(_title(results))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_results(results: dict, out_dir, compare_paths=()) -> list[pathlib.Path]:
    """All metric plots of one results dict into out_dir; returns the PNG paths written."""
    compare = [load_curve(p) for p in compare_paths]
    metrics = list(results["metrics"])
    metrics += sorted({k for r in results["levels"] for k in r if k.startswith(("fid_", "kid_"))})
    metrics = [m for m in metrics if not m.endswith("_std")]
    out = []
    for metric in metrics:
        path = plot_metric(results, metric, compare, pathlib.Path(out_dir) / f"rd_{metric}.png")
        if path:
            out.append(path)
    return out


def main(argv=None) -> int:
    prog = "python -m svi_jax.evaluation.plots"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.json written by eval.py")
    parser.add_argument("--compare", nargs="*", default=[], help="reference curves (JSON)")
    parser.add_argument("--out", help="output folder (default: beside results.json)")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
        out = args.out or pathlib.Path(args.results).parent
        for path in plot_results(results, out, args.compare):
            print(path)
    except EvalInputError as error:  # one line, exit 1: as eval.py, train.py and svi-codec
        print(f"{prog}: error: {one_line(error, 1000)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
