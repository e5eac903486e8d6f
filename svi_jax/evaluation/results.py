"""results.json / CSV writers and the loader for reference curves (`--compare`).

results.json (schema "svi_jax.eval/1"):
  name, created (UTC ISO), schema, versions {python, jax, flax, numpy, svi_jax, platform}
  checkpoint {path, kind: export|official, params_hash}
  config: the full ml_collections config as a dict
  dataset {source, num_images, names}
  settings {levels, samples, seed, ms_ssim {scales, window, sigma}, fid_patch_sizes, kid {...},
            fid_network {network, file, sha256} or null}
  metrics: the per-image metric names (IMAGE_METRICS)
  levels: one row per level, means over images (NaN-aware; NaNs of tiny images skipped):
    {level, bpp, bpp_payload, bpp_est, <metric>..., [<metric>_sample_std: mean over images of
     the std over the M samples, when M > 1], [fid_<p>, kid_<p>_mean, kid_<p>_std]}
  images: per image {name, height, width, bytes, encode_s, decode_s, entropy_decode_s,
    synthesis_s, levels: [{level, bytes, bpp, bpp_payload, bpp_est, <metric>... (mean over
    samples), samples: [{seed, <metric>...}], [spread: {<metric>: {std, min, max}}]}]}
  timing {encode_s, decode_s per image (means)}, notes [strings]
bpp = 8·len(truncate(file, level)) / (H·W) of the original image (header and framing
included); bpp_payload leaves out the header and per-segment framing; bpp_est = −log2 P.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import pathlib
import platform
import sys

import numpy as np

from svi_jax import safety
from svi_jax.evaluation.runner import (
    IMAGE_METRICS,
    MS_SSIM_SCALES,
    MS_SSIM_SIGMA,
    MS_SSIM_WINDOW,
    EvalOutput,
    EvalSettings,
)
from svi_jax.evaluation.sources import Dataset, EvalInputError, ModelSource

SCHEMA = "svi_jax.eval/1"
RATE_KEYS = ("bpp", "bpp_payload", "bpp_est")


def versions() -> dict:
    import flax
    import jax

    try:
        from importlib.metadata import version

        svi = version("svi-jax")
    except Exception:  # not installed as a package (running from a checkout)
        svi = "checkout"
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "svi_jax": svi,
        "platform": platform.platform(),
        "backend": jax.default_backend(),
    }


def _nanmean(values) -> float:
    a = np.asarray(values, np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def level_means(output: EvalOutput) -> list[dict]:
    res = output.results
    out = []
    for k, level in enumerate(res["levels_evaluated"]):
        per = [img["levels"][k] for img in res["images"]]
        row = {"level": level}
        for key in (*RATE_KEYS, *IMAGE_METRICS):
            row[key] = _nanmean([p[key] for p in per])
        if res["samples"] > 1:
            for key in IMAGE_METRICS:
                row[f"{key}_sample_std"] = _nanmean([p["spread"][key]["std"] for p in per])
        for p, by_level in res["fid_kid"].items():
            entry = by_level[str(level)]
            row[f"fid_{p}"] = entry["fid"]
            row[f"kid_{p}_mean"] = entry["kid_mean"]
            row[f"kid_{p}_std"] = entry["kid_std"]
        out.append(row)
    return out


def build_results(
    output: EvalOutput,
    source: ModelSource,
    dataset: Dataset,
    settings: EvalSettings,
    name: str | None = None,
) -> dict:
    res = output.results
    images = res["images"]
    return {
        "schema": SCHEMA,
        "name": name or f"svi-jax {pathlib.Path(source.path).name}",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "checkpoint": {"path": source.path, "kind": source.kind, "params_hash": source.params_hash},
        "config": source.config.to_dict(),
        "dataset": {
            "source": dataset.source,
            "num_images": len(images),
            "names": list(dataset.names),
        },
        "settings": {
            "levels": res["levels_evaluated"],
            "samples": res["samples"],
            "seed": res["seed"],
            "ms_ssim": {"scales": MS_SSIM_SCALES, "window": MS_SSIM_WINDOW, "sigma": MS_SSIM_SIGMA},
            "fid_patch_sizes": list(settings.fid_patch_sizes),
            "kid": {"subsets": settings.kid_subsets, "subset_size": settings.kid_subset_size},
            "fid_network": res.get("fid_network"),
        },
        "metrics": list(IMAGE_METRICS),
        "levels": level_means(output),
        "images": images,
        "fid_kid": res["fid_kid"],
        "timing": {
            "encode_s": _nanmean([i["encode_s"] for i in images]),
            "decode_s": _nanmean([i["decode_s"] for i in images]),
            "note": "per image, all levels; includes jit compilation for each new image shape",
        },
        "notes": res["notes"],
    }


def _json_safe(value):
    """NaN/inf -> null / "inf" strings are not JSON; use None for NaN and ±1e999-free floats."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_atomic(path: str | os.PathLike, text: str | bytes) -> pathlib.Path:
    """Write via a temporary file in the same folder, then rename (never a half file), with
    svi_jax.safety.write_atomic: no temporary left on error, the mode a plain write gives,
    through a symlink to its target. Creates missing folders (eval owns its --out tree)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    safety.write_atomic(path, data, make_parents=True)
    return pathlib.Path(path)


def write_json(path, results: dict) -> pathlib.Path:
    return write_atomic(path, json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n")


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in _json_safe(row).items()})
    return buf.getvalue()


def write_csv(out_dir, results: dict) -> tuple[pathlib.Path, pathlib.Path]:
    """results.csv (per-level means) and results_per_image.csv (image × level × seed)."""
    out_dir = pathlib.Path(out_dir)
    means = results["levels"]
    columns = list(means[0]) if means else ["level"]
    a = write_atomic(out_dir / "results.csv", _csv_text(means, columns))
    per = []
    for img in results["images"]:
        for lvl in img["levels"]:
            base = {k: lvl[k] for k in ("level", "bytes", *RATE_KEYS)}
            for s in lvl["samples"]:
                per.append(
                    {
                        "image": img["name"],
                        "height": img["height"],
                        "width": img["width"],
                        **base,
                        **s,
                    }
                )
    cols = ["image", "height", "width", "level", "seed", "bytes", *RATE_KEYS, *results["metrics"]]
    b = write_atomic(out_dir / "results_per_image.csv", _csv_text(per, cols))
    return a, b


# CompressAI's eval_model JSON uses these names; map them onto ours.
_ALIASES = {
    "psnr-rgb": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "ms-ssim": "ms_ssim",
    "lpips": "lpips_alex",
}


def load_curve(path: str | os.PathLike) -> dict:
    """-> {"name", "curve": {metric: [values...]}} from our results.json or a CompressAI-style
    {"name", "results": {"bpp": [...], "psnr-rgb": [...], ...}} file."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise EvalInputError(f"cannot read comparison file {path} (--compare): {reason}") from None
    except json.JSONDecodeError as error:
        raise EvalInputError(f"cannot read comparison file {path}: {error}") from None
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        keys = sorted({k for row in data["levels"] for k in row})
        curve = {k: [row.get(k) for row in data["levels"]] for k in keys}
    elif isinstance(data, dict) and isinstance(data.get("results"), dict):
        curve = {_ALIASES.get(k, k): v for k, v in data["results"].items() if isinstance(v, list)}
    else:
        raise EvalInputError(
            f"{path} is neither an svi_jax results.json nor a CompressAI-style JSON"
        )
    if "bpp" not in curve:
        raise EvalInputError(f"{path} has no 'bpp' values")
    curve = {k: [float("nan") if v is None else v for v in vals] for k, vals in curve.items()}
    return {"name": data.get("name") or path.stem, "curve": curve}


def load_results(path: str | os.PathLike) -> dict:
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EvalInputError(f"cannot read results {path}: {error}") from None
    if data.get("schema") != SCHEMA:
        raise EvalInputError(f"{path} is not an svi_jax results.json ({SCHEMA})")
    return data
