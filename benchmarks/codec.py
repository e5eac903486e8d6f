"""Benchmark: real progressive coding of one 768x512 photo (default: configs/paper.py).

Reports encode and decode seconds split into network time (g_a/h_a, h_s, the wavefront
(μ, σ) steps, g_s; device work plus dispatch) and entropy-coding time (constriction on the
host), wavefront versus plain raster decoding (the same jitted step, one position per call),
and the file size versus the −log2 estimate of the model. Each measurement is taken after a
warm-up run (compilation reported separately). Random init is fine for timing. Example:

    python benchmarks/codec.py                        # paper config, 768x512 (W x H) photo
    python benchmarks/codec.py --config tiny --raster-slices 16
    python benchmarks/codec.py --json results.json
Prints a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

import svi_jax
from svi_jax.codec import Codec, info
from svi_jax.codec.range_coding import StreamDecoder
from svi_jax.codec.wavefront import raster_schedule, wavefront_schedule
from svi_jax.data.image_io import load_image, skimage_photos
from svi_jax.nn.entropy_models import bits, gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC


def test_photo(width: int, height: int, path: str | None) -> np.ndarray:
    image = load_image(path) if path else skimage_photos(["coffee"])[0][1]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def estimate_bits(codec: Codec, image: np.ndarray) -> tuple[float, np.ndarray]:
    """−log2 P of ẑ and of each slice of ŷ under the model (full-tensor path)."""
    model, params = codec.model, codec.params
    x, _ = svi_jax.pad_to_multiple(jnp.asarray(image, jnp.float32)[None] / 255.0, 64)
    lat = jax.jit(lambda p, x: svi_jax.encode_latents(model, p, x))(params, x)
    z_lik = model.apply({"params": params}, lat.z_hat, method=ProgressiveSIC.z_likelihood)
    y_bits = np.asarray(bits(gaussian_likelihood(lat.y_hat, lat.means, lat.scales)))[0]
    per_slice = y_bits.reshape(*y_bits.shape[:2], model.num_slices, -1).sum(axis=(0, 1, 3))
    return float(np.sum(bits(z_lik))), per_slice


def timed(fn, *args, **kwargs):
    stats: dict = {}
    t0 = time.perf_counter()
    out = fn(*args, stats=stats, **kwargs)
    stats["total_s"] = time.perf_counter() - t0
    return out, {k: round(v, 4) for k, v in stats.items()}


def schedule_comparison(codec: Codec, image: np.ndarray, n: int) -> dict:
    """Decoding the first n slices (the slice loop only: no h_s, no g_s), wavefront schedule
    versus raster order, with the same jitted step function. Each file is coded in its own
    order (a raster file has one coder chunk per position); the encode doubles as warm-up."""
    result = {"slices": n}
    for name, raster in (("wavefront", False), ("raster", True)):
        data = codec.compress(image, level=n, raster=raster)
        stream, _, y_buf, hyper, _ = codec.decode_symbols(data, raster=raster)
        y = np.zeros_like(y_buf)
        stats: dict = {}
        t0 = time.perf_counter()
        for s in range(n):
            decoder = StreamDecoder(stream.slice_streams[s])
            codec._code_slice(y, hyper, s, decoder, None, raster=raster, stats=stats)
            decoder.finish()
        stats["total_s"] = time.perf_counter() - t0
        assert np.array_equal(y, y_buf)
        rows, _ = (
            raster_schedule(*y_buf.shape[:2]) if raster else wavefront_schedule(*y_buf.shape[:2])
        )
        stats["steps_per_slice"] = len(rows)
        result[name] = {k: round(v, 4) for k, v in stats.items()}
    result["speedup_total"] = round(result["raster"]["total_s"] / result["wavefront"]["total_s"], 2)
    result["speedup_network"] = round(
        result["raster"]["network_s"] / result["wavefront"]["network_s"], 2
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="paper", help="configs/<name>.py")
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

    cfg = importlib.import_module(f"svi_jax.configs.{args.config}").get_config()
    model = svi_jax.build_model(cfg.model)
    params = jax.jit(lambda k: svi_jax.init_params(model, k))(jax.random.PRNGKey(0))
    codec = Codec(params, cfg)
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

    z_est, slice_est = estimate_bits(codec, image)
    sizes = info(data)
    y_shape, _ = codec.latent_shapes(h, w)
    summary.update(
        {
            "latent_hw": list(y_shape[:2]),
            "bytes": len(data),
            "bpp": round(8 * len(data) / (h * w), 4),
            "estimate_bytes": round((z_est + float(slice_est.sum())) / 8, 1),
            "z_bytes": sizes["z_bytes"],
            "z_estimate_bytes": round(z_est / 8, 1),
            "slice_bytes": sizes["slice_bytes"],
            "slice_estimate_bytes": [round(float(b) / 8, 1) for b in slice_est],
        }
    )
    summary["overhead_vs_estimate"] = round(summary["bytes"] / summary["estimate_bytes"] - 1, 5)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
