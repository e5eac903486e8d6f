"""Benchmark: real progressive coding of one 768x512 photo (default: configs/paper.py).

Reports encode and decode seconds split into network time (g_a/h_a on the encoder, g_s on
the decoder: float, on the JAX device), integer-model time (h_s, context model, entropy
parameters: exact integers on the host) and entropy-coding time (constriction), wavefront
versus plain raster decoding (one position per step), and the **rate cost of the integer
entropy model**: per level, the file's bytes versus the float model's −log2 estimate.
Each measurement is taken after a warm-up run (compilation reported separately). Random init
is fine for timing; the rate table needs a trained model (--checkpoint): with random weights
the scales do not fit the latents and the file comes out 5-12% below the estimate (a warning
says so). Rate-table columns, cumulative up to each level:
  file B             bytes of the .sic file truncated to that level (header and framing in)
  payload B          the range coder's bytes only (no header, no 8-byte segment framing)
  float -log2 B      the float model's information content of z and the slices, in bytes
  payload/est-1      payload vs that estimate (README: 0.1-0.8% for the trained tiny model)
  floored B          the same estimate with every likelihood raised to at least 2**-24, the
                     least probability the 24-bit range coder gives a symbol (the model's own
                     floor is 1e-9): what the coder must charge for outliers
  payload/floored-1  payload vs the floored estimate
  file/est-1         the whole file vs the float estimate
Examples:

    python benchmarks/codec.py                        # paper config, 768x512 (W x H) photo
    python benchmarks/codec.py --checkpoint runs/tiny --width 384 --height 256
    python benchmarks/codec.py --config tiny --raster-slices 16
    python benchmarks/codec.py --json results.json
Prints a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import svi_jax
from svi_jax.codec import Codec, info
from svi_jax.codec import format as fmt
from svi_jax.codec.wavefront import get_schedule
from svi_jax.configs import load_config_or_exit
from svi_jax.data.image_io import load_image, skimage_photos
from svi_jax.nn.entropy_models import bits, gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC
from svi_jax.weights.export import load_exported_model

RANDOM_INIT_WARNING = (
    "warning: random-init model: rates (payload vs estimate) are not representative; "
    "pass --checkpoint (a trained export) for the rate table"
)


def test_photo(width: int, height: int, path: str | None) -> np.ndarray:
    image = load_image(path) if path else skimage_photos(["coffee"])[0][1]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def estimate_bits(codec: Codec, image: np.ndarray, floor: float = 0.0):
    """−log2 P of ẑ and of each slice of ŷ under the float model (full-tensor path) ->
    (z bits, per-slice bits). floor > 0 raises every likelihood to at least `floor` (2**-24:
    the least probability a 24-bit range coder gives a symbol; the model clamps at 1e-9)."""
    model, params = codec.model, codec.params
    x, _ = svi_jax.pad_to_multiple(jnp.asarray(image, jnp.float32)[None] / 255.0, 64)
    lat = jax.jit(lambda p, x: svi_jax.encode_latents(model, p, x))(params, x)
    z_lik = model.apply({"params": params}, lat.z_hat, method=ProgressiveSIC.z_likelihood)
    y_lik = gaussian_likelihood(lat.y_hat, lat.means, lat.scales)
    y_bits = np.asarray(bits(jnp.maximum(y_lik, floor)))[0]
    per_slice = y_bits.reshape(*y_bits.shape[:2], model.num_slices, -1).sum(axis=(0, 1, 3))
    return float(np.sum(bits(jnp.maximum(z_lik, floor)))), per_slice


def timed(fn, *args, **kwargs):
    stats: dict = {}
    t0 = time.perf_counter()
    out = fn(*args, stats=stats, **kwargs)
    stats["total_s"] = time.perf_counter() - t0
    return out, {k: round(v, 4) for k, v in stats.items()}


def schedule_comparison(codec: Codec, image: np.ndarray, n: int) -> dict:
    """Decoding the first n slices' symbols (h_s, the integer model and the range coder; no
    g_s), wavefront schedule versus raster order. Each file is coded in its own order (a
    raster file has one coder chunk per position); the encode doubles as warm-up."""
    result = {"slices": n}
    for name, raster in (("wavefront", False), ("raster", True)):
        data = codec.compress(image, level=n, raster=raster)
        stats: dict = {}
        t0 = time.perf_counter()
        codec.decode_symbols(data, raster=raster, stats=stats)
        stats["total_s"] = time.perf_counter() - t0
        y_shape, _ = codec.latent_shapes(*image.shape[:2])
        stats["steps_per_slice"] = len(get_schedule(*y_shape[:2], raster)[0])
        result[name] = {k: round(v, 4) for k, v in stats.items()}
    result["speedup_total"] = round(result["raster"]["total_s"] / result["wavefront"]["total_s"], 2)
    return result


def rate_table(codec: Codec, image: np.ndarray, data: bytes) -> list[dict]:
    """Per level: file bytes, stream payload bytes (no header/framing) and the float model's
    −log2 estimate in bytes, plain and with likelihoods floored at 2**-24 (what a 24-bit
    coder charges an outlier); overheads relative to both."""
    z_est, slice_est = estimate_bits(codec, image)
    z_floor, slice_floor = estimate_bits(codec, image, floor=2.0**-24)
    sizes = info(data)
    rows = []
    payload = sizes["z_bytes"] - fmt.SEGMENT_OVERHEAD
    estimate, floored = z_est / 8, z_floor / 8
    for level, segment in enumerate(sizes["slice_bytes"], start=1):
        payload += segment - fmt.SEGMENT_OVERHEAD
        estimate += float(slice_est[level - 1]) / 8
        floored += float(slice_floor[level - 1]) / 8
        file_bytes = sizes["levels"][level - 1]["bytes"]
        rows.append(
            {
                "level": level,
                "file_bytes": file_bytes,
                "payload_bytes": payload,
                "estimate_bytes": round(estimate, 1),
                "floored_estimate_bytes": round(floored, 1),
                "payload_vs_estimate": round(payload / estimate - 1, 5),
                "payload_vs_floored": round(payload / floored - 1, 5),
                "file_vs_estimate": round(file_bytes / estimate - 1, 5),
            }
        )
    return rows


def print_rate_table(rows: list[dict]) -> None:
    print(
        "level | file B | payload B | float -log2 B | payload/est-1 | floored B | "
        "payload/floored-1 | file/est-1"
    )
    for r in rows:
        print(
            f"{r['level']:5d} | {r['file_bytes']:6d} | {r['payload_bytes']:9d} | "
            f"{r['estimate_bytes']:13.1f} | {100 * r['payload_vs_estimate']:+12.3f}% | "
            f"{r['floored_estimate_bytes']:9.1f} | {100 * r['payload_vs_floored']:+16.3f}% | "
            f"{100 * r['file_vs_estimate']:+9.3f}%"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--config",
        default="paper",
        help="config name (tiny, paper, demo) or path (configs/tiny.py)",
    )
    ap.add_argument("--checkpoint", default=None, help="export / workdir (overrides --config)")
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--image", default=None, help="photo to resize (default: skimage coffee)")
    ap.add_argument(
        "--raster-slices", type=int, default=2, help="slices decoded in raster order (timed)"
    )
    ap.add_argument(
        "--schedule-only", action="store_true", help="only the wavefront/raster comparison"
    )
    ap.add_argument("--json", default=None, help="also write the summary here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    if args.checkpoint:
        cfg, params, digest = load_exported_model(args.checkpoint)
        codec = Codec(params, cfg, digest)
        args.config = args.checkpoint
    else:
        cfg = load_config_or_exit(ap, args.config)
        model = svi_jax.build_model(cfg.model)
        params = svi_jax.init_params(model, jax.random.PRNGKey(0))  # eager: nothing per parameter
        t0 = time.perf_counter()
        codec = Codec(params, cfg)
    print(f"model + integer entropy model: {time.perf_counter() - t0:.2f} s", flush=True)
    if not args.checkpoint:
        print(RANDOM_INIT_WARNING, file=sys.stderr, flush=True)
    image = test_photo(args.width, args.height, args.image)
    h, w = image.shape[:2]
    print(f"{args.config}: {h}x{w} image, devices {jax.devices()}", flush=True)

    n = max(1, min(args.raster_slices, codec.num_slices))
    summary = {
        "config": args.config,
        "device": str(jax.devices()[0]),
        "image_hw": [h, w],
        "raster_vs_wavefront": schedule_comparison(codec, image, n),
    }
    print(f"slice loops ({n} slices): {summary['raster_vs_wavefront']}", flush=True)
    if args.schedule_only:
        print(json.dumps(summary))
        return
    t0 = time.perf_counter()
    data = codec.compress(image)  # warm-up: compiles every encoder function
    codec.decompress(data)  # and every decoder function
    summary["compile_s"] = round(time.perf_counter() - t0, 2)
    data, summary["encode"] = timed(codec.compress, image)
    out, summary["decode"] = timed(codec.decompress, data)
    assert out.shape == image.shape
    print(f"encode {summary['encode']}\ndecode {summary['decode']}", flush=True)

    y_shape, _ = codec.latent_shapes(h, w)
    table = rate_table(codec, image, data)
    print_rate_table(table)
    summary.update(
        {
            "latent_hw": list(y_shape[:2]),
            "bytes": len(data),
            "bpp": round(8 * len(data) / (h * w), 4),
            "estimate_bytes": table[-1]["estimate_bytes"],
            "rate_table": table,
        }
    )
    summary["overhead_vs_estimate"] = round(summary["bytes"] / summary["estimate_bytes"] - 1, 5)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
