"""Benchmark: evaluating all 16 levels of one image, batched (eval.py) vs the official protocol.

"ours" is the network work eval.py does per image: one pass of g_a, h_a, h_s and the context
model for the rate estimate, then the 16 level syntheses in one batch (`--synthesis-batch`).
"official protocol, svi-jax model" is svi-jax's own re-implementation of the official
protocol, run here on the same model: 16 separate `test` passes (svi_jax.evaluation_pass, level
traced so one compilation serves all levels; each pass runs g_a, h_a, h_s, context, g_s and the
re-analysis of the reconstruction); each pass returns everything the official `test()` returns
(reconstruction, latents, rates, likelihoods, synonym/sample distances), so XLA cannot drop the
re-analysis or the rates. Both are jitted, compiled before timing, measured in the same
process on the same image; metrics are left out of both (identical work). Also printed: the
compile seconds, peak memory, achieved TFLOP/s, its fraction of a large GEMM's FLOP/s
measured in the same run (the machine's dense roofline) and MFU (the jaxpr's FLOPs of each
jitted piece; benchmarks/_report.py) and, on device kinds with a figure of the official PyTorch
code (a 768x512 test() pass: 21.7 s on the 2-core CPU, 0.085 s on an H200), the ratios to it
(printed only at --size 768x512; those lines say "PyTorch").

Reading the numbers: the matmul peak is measured now, in this process (one large GEMM): on a
loaded machine it is lower and varies between runs (1.6x seen on the shared 2-core CPU), so
compare `of_matmul_peak` only between runs on an idle machine. TFLOP counts the jaxpr's
dot/convolution FLOPs; "XLA's count" (its cost analysis) is a cross-check that counts a scanned
(while-loop) body once instead of once per iteration (the Swin stages and the M detail
samples are scans: about half on CPU) and, on GPUs, leaves out cuBLAS/cuDNN calls. MFU needs a
datasheet peak for the device: "n/a" on CPUs and unlisted devices. The real range coder
is timed separately with --with-codec (the official code has none). --with-metrics times the
per-image metrics of the 16 reconstructions two ways: eval.py's (the original's LPIPS/DISTS
features computed once) against pairwise calls that recompute them for every reconstruction.

    python benchmarks/eval.py                          # configs/paper.py, 256x256
    python benchmarks/eval.py --size 768x512 --synthesis-batch 4 --repeats 3
    python benchmarks/eval.py --config tiny --size 128 --with-codec
    python benchmarks/eval.py --config tiny --size 512 --synthesis-batch --with-metrics
"""

from __future__ import annotations

import argparse
import functools
import time

import _report
import jax
import jax.numpy as jnp
import numpy as np

import svi_jax
from svi_jax.codec import Codec, detail_uniform
from svi_jax.configs import load_config_or_exit
from svi_jax.evaluation import runner
from svi_jax.evaluation.runner import _estimated_bits, _synthesize
from svi_jax.metrics import dists_distance, ms_ssim, psnr
from svi_jax.metrics.lpips import lpips_distance

# svi-jax's re-implementation of the official protocol (not the PyTorch code), on this model.
PROTOCOL = "official protocol (svi-jax model), 16 separate test passes"


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--config",
        default="paper",
        help="config name (tiny, paper, demo) or path (configs/tiny.py)",
    )
    ap.add_argument(
        "--size", default="256", help="image size: N (square) or WxH, multiples of 64 (768x512)"
    )
    ap.add_argument(
        "--synthesis-batch", type=int, nargs="*", default=[1, 16], help="g_s batch sizes to time"
    )
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats (best is reported)")
    ap.add_argument("--with-codec", action="store_true", help="also time real encode + decode")
    ap.add_argument(
        "--with-metrics", action="store_true", help="also time the metrics (cached vs pairwise)"
    )
    args = ap.parse_args()

    width, _, height = args.size.partition("x")
    width, height = int(width), int(height or width)
    cfg = load_config_or_exit(ap, args.config)
    model = svi_jax.build_model(cfg.model)
    t0 = time.perf_counter()
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))  # eager: nothing per parameter
    print(f"init: {time.perf_counter() - t0:.1f} s (random weights: speed only)")
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    x = jnp.asarray(image, jnp.float32)[None] / 255.0
    levels = np.arange(1, model.num_slices + 1, dtype=np.int32)
    y_shape = (height // 16, width // 16, model.latent_channels)
    uniform = detail_uniform(0, y_shape)

    lat = jax.jit(lambda p, x: svi_jax.encode_latents(model, p, x))(params, x)
    y_hat, hyper = lat.y_hat[0], lat.hyper[0]

    def ours(b: int):
        out = [_estimated_bits(model, params, x)]
        for start in range(0, len(levels), b):
            lv = jnp.asarray(levels[start : start + b])
            noise = jnp.broadcast_to(uniform, (len(lv), *y_shape))
            out.append(_synthesize(model, params, y_hat, hyper, lv, noise))
        return out

    # Everything the official test() returns, so no part of its work is dead code.
    official_pass = jax.jit(lambda p, x, level, u: svi_jax.evaluation_pass(model, p, x, level, u))

    def official():
        return [official_pass(params, x, jnp.int32(lv), uniform[None]) for lv in levels]

    runs = [
        (f"ours, synthesis batch {b}", functools.partial(ours, b)) for b in args.synthesis_batch
    ]
    runs.append((PROTOCOL, official))
    if not args.synthesis_batch:  # metrics / codec only
        runs = []
    first = {}
    for name, fn in runs:
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first[name] = time.perf_counter() - t0
        print(f"{name}: first call (compile + run) {first[name]:.1f} s", flush=True)
    print(f"device: {jax.devices()[0].device_kind}; config {args.config}; {width}x{height}")
    times = {name: _time(fn, args.repeats) for name, fn in runs}
    for name, seconds in times.items():
        t_official = times[runs[-1][0]]
        ratio = "" if name == runs[-1][0] else f", protocol/this = {t_official / seconds:.2f}x"
        print(f"{name}: {seconds:.3f} s/image{ratio}")
    if runs:
        pieces = {
            "bits": (_estimated_bits, (model, params, x)),
            "pass": (official_pass, (params, x, jnp.int32(1), uniform[None])),
        }
        rows = {}
        for b in args.synthesis_batch:
            lv = jnp.asarray(levels[:b])
            noise = jnp.broadcast_to(uniform, (b, *y_shape))
            pieces[b] = (_synthesize, (model, params, y_hat, hyper, lv, noise))
            rows[f"ours, synthesis batch {b}"] = [("bits", 1), (b, -(-len(levels) // b))]
        rows[runs[-1][0]] = [("pass", len(levels))]
        _performance(model, cfg, pieces, rows, times, first, (width, height))
    if args.with_metrics:
        _time_metrics(image, model.num_slices, args.repeats)
    if args.with_codec:
        codec = Codec(params, cfg)
        codec.decompress(codec.compress(image))  # compile
        t0 = time.perf_counter()
        data = codec.compress(image)
        t1 = time.perf_counter()
        codec.decode_symbols(data)
        t2 = time.perf_counter()
        print(f"real codec: encode {t1 - t0:.2f} s, entropy-decode all levels {t2 - t1:.2f} s")


def _performance(model, cfg, pieces, rows, times, first, size) -> None:
    """Compile seconds, TFLOP/s, MFU, peak memory and the official ratios (benchmarks/_report).

    pieces: {key: (jitted fn, args)}; rows: {timed run: [(piece key, calls per image)]};
    first: seconds of each run's first call. Compile seconds = first call - timed call (the
    pieces are already compiled when their FLOPs are read back here).
    """
    info = {key: _report.compile_timed(fn, *fn_args)[1] for key, (fn, fn_args) in pieces.items()}
    for key, (fn, fn_args) in pieces.items():  # the model's FLOPs (XLA's miss GPU library calls)
        info[key]["flops"] = _report.traced_flops(fn, *fn_args)
    dtype = str(jnp.dtype(model.dtype))
    precision = cfg.model.get("precision", "highest")
    peak_gib, peak_kind = _report.peak_memory()
    print(f"peak memory {peak_gib:.2f} GiB ({peak_kind}); dtype {dtype}, precision {precision}")
    matmul_peak = _report.measured_matmul_peak(dtype, precision)
    print(f"matmul peak {matmul_peak / 1e12:.4g} TFLOP/s ({dtype}): {_report.MATMUL_PEAK_NOTE}")
    print(f"TFLOP: the jaxpr's dot/conv FLOPs; XLA's count: {_report.FLOPS_XLA_NOTE}")
    for name, parts in rows.items():
        flops = sum(info[key]["flops"] * n for key, n in parts)
        counts = [info[key]["flops_xla"] for key, _ in parts]
        xla = None
        if None not in counts:
            xla = sum(f * n for f, (_, n) in zip(counts, parts, strict=True))
        compile_s = first[name] - times[name]
        perf = _report.throughput(flops, times[name], dtype, precision, matmul_peak)
        xla_text = "-" if xla is None else f"{xla / 1e12:.3f}"
        print(
            f"{name}: compile {compile_s:.1f} s, {flops / 1e12:.3f} TFLOP "
            f"(XLA's count: {xla_text}), "
            f"{perf['tflops']} TFLOP/s = {perf['of_matmul_peak']:.0%} of the measured matmul "
            f"peak, {_report.mfu_text(perf)}"
        )
    official_name = [*rows][-1]
    t_pass = times[official_name] / model.num_slices
    print(f"one test pass of the official protocol (svi-jax model, one level): {t_pass:.3f} s")
    if size != (768, 512):
        return
    ref = _report.official_ratios(t_pass, None, "test_768x512")
    if "official_s" not in ref:
        print(f"official PyTorch 768x512 test(): {ref['official']}")
        return
    t_official = ref["official_s"]
    print(
        f"official PyTorch test() at 768x512 on this device kind: {t_official} s "
        f"({ref['official_source']})"
    )
    print(f"  one test pass here: PyTorch/this = {t_official / t_pass:.2f}x")
    for name in [*rows][:-1]:
        print(f"  {name}: this/one PyTorch pass = {times[name] / t_official:.2f}x (goal <= 2)")


@functools.partial(jax.jit, static_argnames="with_ms_ssim")
def _pairwise_metrics(nets, reference, reconstructions, with_ms_ssim):
    """The straightforward form: every metric call sees (original, reconstruction) pairs."""
    rec = reconstructions.astype(jnp.float32) / 255.0
    ref = jnp.broadcast_to(reference.astype(jnp.float32) / 255.0, rec.shape)
    out = {
        "psnr": psnr(ref, rec, data_range=1.0),
        "lpips_alex": lpips_distance(nets["lpips_alex"], ref, rec, "alex"),
        "lpips_vgg": lpips_distance(nets["lpips_vgg"], ref, rec, "vgg"),
        "dists": dists_distance(nets["dists"], ref, rec),
    }
    if with_ms_ssim:
        out["ms_ssim"] = ms_ssim(ref, rec, 1.0, runner.MS_SSIM_WINDOW, runner.MS_SSIM_SIGMA)
    return out


def _time_metrics(image: np.ndarray, count: int, repeats: int, batch: int = 4) -> None:
    nets = runner.load_metric_networks()
    rng = np.random.RandomState(1)
    noise = rng.randint(-20, 21, (count, *image.shape))
    recs = np.clip(image[None].astype(int) + noise, 0, 255).astype(np.uint8)
    ref = jnp.asarray(image)[None]
    with_ms = min(image.shape[:2]) >= 161

    def cached():
        feats = runner._reference_features(nets, ref)
        return [
            runner._image_metrics(nets, ref, feats, jnp.asarray(recs[i : i + batch]), with_ms)
            for i in range(0, count, batch)
        ]

    def pairwise():
        return [
            _pairwise_metrics(nets, ref, jnp.asarray(recs[i : i + batch]), with_ms)
            for i in range(0, count, batch)
        ]

    a, b = jax.block_until_ready((cached(), pairwise()))  # compile both
    for key in a[0]:  # same numbers both ways
        np.testing.assert_allclose(a[0][key], b[0][key], rtol=1e-4, atol=1e-5)
    t_cached, t_pairwise = _time(cached, repeats), _time(pairwise, repeats)
    print(
        f"metrics of {count} reconstructions ({image.shape[0]}x{image.shape[1]}, batch {batch}): "
        f"original's features once {t_cached:.2f} s, pairwise {t_pairwise:.2f} s, "
        f"pairwise/once = {t_pairwise / t_cached:.2f}x"
    )


if __name__ == "__main__":
    main()
