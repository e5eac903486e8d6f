"""Compile time is a product metric: trace / lower / compile seconds and HLO size of every
jitted function of svi_jax, for configs/tiny.py and configs/paper.py.

    python benchmarks/compile.py                         # both configs, every function
    python benchmarks/compile.py --configs tiny --only step/main
    python benchmarks/compile.py --configs configs/tiny.py   # a name or a config file
    python benchmarks/compile.py --no-compile            # trace + lower only (HLO sizes)
    python benchmarks/compile.py --cache /tmp/xla        # twice: the 2nd run is warm (svi_jax/
                                                         # compilation.py's persistent cache)

Functions (all lowered on abstract arguments, nothing runs):
  init_params                 model parameters through one jit (then one line: the eager call
                              train.py makes, wall seconds in a fresh process: trace + two
                              flat draws + host slicing; "warm" with --cache)
  step/warming|main|gan       the training step of each phase (svi_jax.training.steps), per
                              device batch 2 of the config's crop, M = config.loss.num_samples
  eval/validation             the training loop's validation pass (evaluation_pass, MSE, bpp)
  eval/validation_lpips       its LPIPS (a static crop: one compilation per original size)
  eval/estimated_bits, eval/synthesize   the evaluation runner's jitted passes
  codec/analyze, codec/reconstruct (the codec's entropy path is integer numpy: not jitted)

Columns: trace_s, lower_s, compile_s (wall-clock seconds: a loaded shared CPU gives noisy
numbers, compare ratios), cpu_s (CPU seconds of the compilation, all threads: steadier),
hlo_compute (compute instructions of the HLO jax emits: what README and tests/test_compile.py
quote, 9,806 for the tiny main step), hlo_all (the same HLO with the printer's bookkeeping:
parameter, tuple, get-tuple-element, constant, call), hlo_opt (instructions after XLA's passes),
kernels (fusions XLA made), distinct (the distinct ones: XLA:CPU compiles each distinct fused
computation once; an upper-bound proxy of its kernel compiler's work, in which large kernels
weigh most), temp_GiB (XLA's temporary-buffer
estimate); "-" where there is no value (--no-compile, a backend without the analysis).
Compilation is cold unless --cache (or $JAX_COMPILATION_CACHE_DIR) names a cache.
Eval and codec images: 128x128 (tiny) and 768x512 (paper, the issue's eval image).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp

from svi_jax.codec import api as codec_api
from svi_jax.compilation import enable_persistent_cache
from svi_jax.configs import load_config, load_config_or_exit
from svi_jax.evaluation import runner
from svi_jax.graph_size import abstract, compile_report
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.model import DOWNSCALE_Y, build_model, init_params
from svi_jax.training import steps
from svi_jax.training.validation import Validator

EVAL_HW = {"tiny": (128, 128), "paper": (512, 768)}  # other configs: the paper's 768x512
PER_DEVICE_BATCH = 2
f32 = jnp.float32


def sds(shape, dtype=f32):
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def step_args(config, model, phase: str):
    """(jitted step, abstract state, abstract batch) of `phase`, as the training loop builds it."""
    config = config.copy_and_resolve_references()
    config.phase = phase
    config.data.batch_size = PER_DEVICE_BATCH * jax.device_count()
    state = jax.eval_shape(lambda: steps.init_state(config, model, jax.random.PRNGKey(0)))
    fn = jax.jit(steps.make_step_fn(config, model, load_lpips_params("alex")), donate_argnums=0)
    size = config.data.crop_size
    return fn, state, sds((config.data.batch_size, size, size, 3))


def functions(name: str):
    """Yield (label, jitted, args, kwargs) for config `name`."""
    config = load_config(name)
    model = build_model(config.model)
    key = jax.random.key_data(jax.random.PRNGKey(0))
    yield "init_params", jax.jit(lambda k: init_params(model, k)), (sds(key.shape, key.dtype),), {}
    params = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    for phase in steps.PHASES:
        fn, state, batch = step_args(config, model, phase)
        yield f"step/{phase}", fn, (state, batch), {}

    val = Validator(config, model, load_lpips_params("alex"), [])
    crop = config.data.val_crop
    hw = sds((2,), jnp.int32)  # the original size is data: one compilation per padded shape
    yield (
        "eval/validation",
        val._evaluate,
        (params, sds((1, crop, crop, 3)), sds((), jnp.int32), abstract(val.key), hw),
        {},
    )
    x = sds((val.num_samples, crop, crop, 3))
    yield "eval/validation_lpips", val._lpips, (sds((1, crop, crop, 3)), x), {"hw": (crop, crop)}
    h, w = EVAL_HW.get(pathlib.Path(name).stem, EVAL_HW["paper"])
    c = model.latent_channels
    lh, lw = h // DOWNSCALE_Y, w // DOWNSCALE_Y
    n = runner.default_synthesis_batch()
    yield "eval/estimated_bits", runner._estimated_bits, (model, params, sds((1, h, w, 3))), {}
    yield (
        "eval/synthesize",
        runner._synthesize,
        (
            model,
            params,
            sds((lh, lw, c)),
            sds((lh, lw, 2 * c)),
            sds((n,), jnp.int32),
            sds((n, lh, lw, c)),
        ),
        {},
    )
    medians = sds((model.hyper_channels,))
    yield "codec/analyze", codec_api._analyze, (model, params, sds((1, h, w, 3)), medians), {}
    level = sds((), jnp.int32)
    latent, hyper = sds((lh, lw, c)), sds((lh, lw, 2 * c))
    yield (
        "codec/reconstruct",
        codec_api._reconstruct,
        (model, params, latent, hyper, level, latent),
        {},
    )
    # The entropy path (h_s, context, entropy parameters) is the integer model on the host
    # (svi_jax/codec/integer_model.py): numpy, nothing to compile.


def eager_init_seconds(name: str, cache: str) -> float:
    """Wall seconds of an eager `init_params` call in a fresh interpreter (nothing traced or
    compiled yet in that process; `cache` is the persistent compilation cache, "" for none):
    its abstract trace, the two flat draws' compile and run, the host slicing."""
    setup = f"enable_persistent_cache({cache!r})" if cache else "pass"
    code = (
        "import time, jax\n"
        "from svi_jax.compilation import enable_persistent_cache\n"
        "from svi_jax.configs import load_config\n"
        "from svi_jax.nn.model import build_model, init_params\n"
        f"{setup}\n"
        f"model = build_model(load_config({name!r}).model)\n"
        "start = time.perf_counter()\n"
        "jax.block_until_ready(init_params(model, jax.random.PRNGKey(1)))\n"
        "print(time.perf_counter() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _cell(value, spec: str, width: int) -> str:
    """`value` formatted with `spec`, right-aligned in `width`; "-" when there is none."""
    text = "-" if value is None else format(value, spec)
    return f"{text:>{width}}"


COLUMNS = (  # (header, CompileReport field or None for temp_GiB, format, width)
    ("trace_s", "trace_s", ".2f", 8),
    ("lower_s", "lower_s", ".2f", 8),
    ("compile_s", "compile_s", ".2f", 9),
    ("cpu_s", "compile_cpu_s", ".2f", 7),
    ("hlo_compute", "hlo_compute", "d", 11),
    ("hlo_all", "hlo_lowered", "d", 7),
    ("hlo_opt", "hlo_compiled", "d", 7),
    ("kernels", "fusions", "d", 7),
    ("distinct", "distinct_fusions", "d", 8),
    ("temp_GiB", None, ".3f", 8),
)


def table_row(name: str, label: str, r) -> str:
    temp = None if r.temp_bytes is None else r.temp_bytes / 2**30
    cells = [
        _cell(temp if field is None else getattr(r, field), spec, width)
        for _, field, spec, width in COLUMNS
    ]
    return f"{name:6} {label:22} " + " ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--configs",
        default="tiny,paper",
        help="comma-separated config names (tiny, paper, demo) or paths (configs/tiny.py)",
    )
    ap.add_argument("--only", default="", help="substring filter on function labels")
    ap.add_argument("--no-compile", action="store_true", help="trace and lower only")
    ap.add_argument("--json", action="store_true", help="one JSON line per function")
    ap.add_argument("--cache", default="", help="persistent compilation cache folder (warm runs)")
    args = ap.parse_args()
    names = args.configs.split(",")
    for name in names:  # every one checked before the first (slow) compilation
        load_config_or_exit(ap, name)
    cache = (
        enable_persistent_cache(args.cache) if args.cache else jax.config.jax_compilation_cache_dir
    )
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}")
    print(f"persistent compilation cache: {cache or 'off (cold compiles)'}")
    header = f"{'config':6} {'function':22} " + " ".join(
        f"{title:>{width}}" for title, _, _, width in COLUMNS
    )
    if not args.json:
        print(header)
    labels, matched = [], 0
    for name in names:
        for label, fn, fargs, kwargs in functions(name):
            labels.append(label)
            if args.only and args.only not in label:
                continue
            matched += 1
            r = compile_report(fn, *fargs, compile=not args.no_compile, **kwargs)
            eager = None
            if label == "init_params" and not args.no_compile:
                eager = eager_init_seconds(name, str(cache or ""))
            warmth = "warm (cache)" if cache else "cold"
            if args.json:
                print(json.dumps({"config": name, "function": label, **r.__dict__}), flush=True)
                if eager is not None:
                    row = {"config": name, "function": "init_params (eager)", "wall_s": eager}
                    print(json.dumps({**row, "cache": bool(cache)}), flush=True)
                continue
            print(table_row(name, label, r), flush=True)
            if eager is not None:
                print(
                    f"{name:6} {'init_params (eager)':22} {eager:8.2f} s wall, {warmth}, fresh"
                    " process: the call train.py makes",
                    flush=True,
                )
    if not matched:
        ap.exit(
            2,
            f"compile.py: error: --only {args.only!r} matches no function; the functions:"
            f" {', '.join(dict.fromkeys(labels))}\n",
        )


if __name__ == "__main__":
    main()
