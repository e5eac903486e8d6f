"""Benchmark the training step: compile seconds, seconds/step, peak memory, TFLOP/s, MFU.

    python benchmarks/train_step.py                       # configs/paper.py, main phase
    python benchmarks/train_step.py --config tiny         # a name (tiny, paper, demo) or a path
    python benchmarks/train_step.py --phases=warming,main,gan --steps=32 \
        --config.model.remat=True                         # any config field can be overridden

Run length: --steps defaults to 32 on a GPU/TPU and to 4 on CPU (--warmup 2 / 1), where one
paper step takes about a minute on 2 cores (32 steps: ~35 min). After the first step the
estimated time of the remaining steps is printed (stderr) before they run.

Per phase: one step is compiled, then `--steps` steps run on random batches of
`--per_device_batch` x crop x crop per device (paper: 2 x 256 x 256, M = 5); the number of
traces of the step function over those steps must be 1 (the level is traced data). Steady
state excludes the first `--warmup` steps. Peak memory is the device's peak_bytes_in_use
when it reports one, else the process's peak resident set (CPU). Prints one JSON line/phase
with lower/compile seconds, TFLOP/s, MFU (the model's FLOPs counted from the jaxpr of the step
without rematerialisation), HFU (the FLOPs of the step that runs, recomputation included) and
XLA's own FLOP count as a cross-check (`flops_xla`: it counts a scanned body once, not per
iteration, so it is lower than the jaxpr's count, and misses GPU library calls;
benchmarks/_report.py), the measured FLOP/s of one large GEMM in the step's dtype
(`matmul_peak_tflops`, the machine's dense roofline, measured now, in the same run: a loaded
machine lowers it, 1.6x seen between runs on the shared CPU, so compare `of_matmul_peak` only
across runs on an idle machine) with the fraction of it reached (`of_matmul_peak`
for the model's FLOPs, `hfu_of_matmul_peak` for the executed ones) and,
in the official setting (main phase, paper model, 2 x 256 x 256 per device, M = 5), the ratios
to the official PyTorch step on the same device kind (speedup > 1: faster; memory < 1: smaller).
    python benchmarks/train_step.py --steps 3 --warmup 1                 # this CPU
    python benchmarks/train_step.py --per_device_batch 16 --config.model.dtype=bfloat16
    python benchmarks/train_step.py --per_device_batch 16 --steps 4 --profile /tmp/trace
        # + a kernel table: the costliest XLA ops and op kinds of 3 traced steps
"""

import json
import pathlib
import sys
import time

import _profile_summary
import _report
import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from svi_jax.configs import ConfigError, resolve_config_path
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.model import build_model
from svi_jax.tracing import trace_count
from svi_jax.training import loop, steps

ROOT = pathlib.Path(__file__).resolve().parents[1]

config_flags.DEFINE_config_file(
    "config", str(ROOT / "svi_jax" / "configs" / "paper.py"), "Config file."
)
flags.DEFINE_string("phases", "main", "Comma-separated phases to benchmark.")
flags.DEFINE_integer(
    "steps",
    None,
    "Steps per phase after compilation (default: 32 on a GPU/TPU, 4 on CPU, where a paper "
    "step takes about a minute on 2 cores; the estimated time is printed after the first step).",
)
flags.DEFINE_integer(
    "warmup", None, "Steps excluded from the steady-state timing (default: 2; 1 on CPU)."
)
flags.DEFINE_integer("per_device_batch", 2, "Images per device.")
flags.DEFINE_string(
    "profile",
    "",
    "After timing, trace --profile_steps steps with jax.profiler into DIR/<phase> "
    "and print where the device time goes (benchmarks/_profile_summary.py).",
)
flags.DEFINE_integer("profile_steps", 3, "Steps in the --profile trace.")
FLAGS = flags.FLAGS


def official_setting(config, phase: str) -> bool:
    """The setting of the official figures: paper model, main phase, 2 x 256^2 / device, M=5."""
    return (
        phase == "main"
        and config.model.latent_channels == 512
        and tuple(config.model.analysis_dims) == (256, 384, 512, 512)
        and FLAGS.per_device_batch == 2
        and config.data.crop_size == 256
        and config.loss.num_samples == 5
    )


def performance_report(config, model, phase, seconds, jaxpr_flops, info, flops_model) -> dict:
    """TFLOP/s, MFU (model FLOPs), HFU (the traced step's FLOPs, recomputation included) and
    official ratios of one benchmarked phase (benchmarks/_report.py)."""
    peak_gib, peak_kind = _report.peak_memory()
    dtype = str(jax.numpy.dtype(model.dtype))
    precision = config.model.get("precision", "highest")
    n = jax.device_count()
    matmul_peak = _report.measured_matmul_peak(dtype, precision)
    hardware = _report.throughput(jaxpr_flops / n, seconds, dtype, precision, matmul_peak)
    out = {
        "dtype": dtype,
        "precision": precision,
        "flops_model_per_device": round(flops_model / n),
        "flops_jaxpr_per_device": round(jaxpr_flops / n),
        "flops_xla": info.get("flops_xla"),
        **_report.throughput(flops_model / n, seconds, dtype, precision, matmul_peak),
        "hfu": hardware["mfu"],
        "hfu_of_matmul_peak": hardware["of_matmul_peak"],
        "matmul_peak_tflops": round(matmul_peak / 1e12, 4),
        "matmul_peak_note": _report.MATMUL_PEAK_NOTE,
        "flops_xla_note": _report.FLOPS_XLA_NOTE,
        "peak_memory_gib": round(peak_gib, 3),
        "peak_memory_kind": peak_kind,
    }
    if official_setting(config, phase):
        out.update(_report.official_ratios(seconds, peak_gib, "train_step"))
    else:
        out["official"] = "n/a (not the official setting: main, paper, 2x256^2/device, M=5)"
    return out


def bench_phase(config, phase: str) -> dict:
    config = config.copy_and_resolve_references()
    config.phase = phase
    config.data.batch_size = FLAGS.per_device_batch * jax.device_count()
    mesh = loop.make_mesh()
    replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    model = build_model(config.model)
    state = jax.jit(
        lambda: steps.init_state(config, model, jax.random.PRNGKey(0)), out_shardings=replicated
    )()
    lpips_params = load_lpips_params("alex")
    step_fn = jax.jit(
        steps.make_step_fn(config, model, lpips_params),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    size = config.data.crop_size
    rng = np.random.default_rng(0)
    batches = [
        jax.device_put(
            rng.random((config.data.batch_size, size, size, 3), np.float32), batch_sharding
        )
        for _ in range(2)
    ]
    traces_before = trace_count(steps.step_trace_name(phase))
    compiled, info = _report.compile_timed(step_fn, state, batches[0])
    t0 = time.perf_counter()
    state, metrics = compiled(state, batches[0])
    jax.block_until_ready(metrics)
    first_run_s = time.perf_counter() - t0
    num_steps, warmup = run_length()
    print(
        f"{phase}: compiled in {info['lower_s'] + info['compile_s']:.0f} s, first step "
        f"{first_run_s:.1f} s: the {num_steps} timed steps (--steps) take about "
        f"{estimate_text(first_run_s * num_steps)}",
        file=sys.stderr,
        flush=True,
    )
    times = []
    for i in range(num_steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    steady = times[warmup:] or times
    if FLAGS.profile:
        trace_dir = pathlib.Path(FLAGS.profile) / phase
        with jax.profiler.trace(str(trace_dir)):
            for i in range(FLAGS.profile_steps):
                with jax.profiler.StepTraceAnnotation("train", step_num=i):
                    state, metrics = compiled(state, batches[i % 2])
            jax.block_until_ready(metrics)
        print(_profile_summary.summarize(trace_dir, FLAGS.profile_steps), flush=True)
    seconds = float(np.median(steady))
    compilations = trace_count(steps.step_trace_name(phase)) - traces_before
    jaxpr_flops = _report.traced_flops(step_fn, state, batches[0])
    flops_model = (
        _report.model_step_flops(config, model, state, batches[0], lpips_params)
        if model.remat
        else jaxpr_flops
    )
    perf = performance_report(config, model, phase, seconds, jaxpr_flops, info, flops_model)
    return {
        "phase": phase,
        "device": str(jax.devices()[0].device_kind),
        "devices": jax.device_count(),
        "global_batch": config.data.batch_size,
        "crop": size,
        "num_samples": config.loss.num_samples,
        "remat": bool(model.remat),  # resolved ("auto": CPU only)
        "lower_s": info["lower_s"],
        "compile_s": info["compile_s"],
        "xla_temp_gib": info.get("xla_temp_gib"),
        "first_run_s": round(first_run_s, 3),
        "seconds_per_step": round(seconds, 4),
        "steps_timed": len(steady),
        "compilations": compilations,
        **perf,
        "final_loss": float(metrics["loss"]),
    }


def run_length() -> tuple[int, int]:
    """(--steps, --warmup), their defaults chosen for the backend (CPU: a short run)."""
    cpu = jax.default_backend() == "cpu"
    steps_default, warmup_default = (4, 1) if cpu else (32, 2)
    num_steps = steps_default if FLAGS.steps is None else FLAGS.steps
    return num_steps, warmup_default if FLAGS.warmup is None else FLAGS.warmup


def estimate_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def resolve_config_argv(argv: list[str]) -> list[str]:
    """--config NAME -> the file of that config (absl's config_flags takes a path only), so
    the flag takes a name (tiny, paper, demo) or a path as every benchmark does. An unknown
    one ends the program with one line naming the known names (SystemExit, status 2)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            index, value, prefix = i + 1, out[i + 1], ""
        elif arg.startswith("--config="):
            index, value, prefix = i, arg[len("--config=") :], "--config="
        else:
            continue
        spec, colon, extra = value.partition(":")  # absl's "path:argument" form
        try:
            out[index] = prefix + str(resolve_config_path(spec)) + colon + extra
        except ConfigError as error:
            raise SystemExit(f"train_step.py: error: {error}") from None
    return out


def main(argv):
    del argv
    for phase in FLAGS.phases.split(","):
        print(json.dumps(bench_phase(FLAGS.config, phase)), flush=True)


if __name__ == "__main__":
    app.run(main, argv=resolve_config_argv(sys.argv))
