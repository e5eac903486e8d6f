"""Benchmark the training step: steady-state seconds/step, peak memory, compilations.

    python benchmarks/train_step.py                       # configs/paper.py, main phase
    python benchmarks/train_step.py --phases=warming,main,gan --steps=32 \
        --config.model.remat=True                         # any config field can be overridden

Per phase: one step is compiled ahead of time (compile_s; xla_temp_gib is XLA's estimate of
its temporary buffers), then `--steps` steps run on random batches of
`--per_device_batch` x crop x crop per device (paper: 2 x 256 x 256, M = 5); the number of
traces of the step function over those steps must be 1 (the level is traced data). Steady
state excludes the first `--warmup` steps. Peak memory is the device's peak_bytes_in_use
when it reports one, else the process's peak resident set (CPU). Prints one JSON line/phase.
"""

import json
import pathlib
import resource
import time

import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.model import build_model
from svi_jax.tracing import trace_count
from svi_jax.training import loop, steps

ROOT = pathlib.Path(__file__).resolve().parents[1]

config_flags.DEFINE_config_file(
    "config", str(ROOT / "svi_jax" / "configs" / "paper.py"), "Config file."
)
flags.DEFINE_string("phases", "main", "Comma-separated phases to benchmark.")
flags.DEFINE_integer("steps", 32, "Steps per phase (after compilation).")
flags.DEFINE_integer("warmup", 2, "Steps excluded from the steady-state timing.")
flags.DEFINE_integer("per_device_batch", 2, "Images per device.")
FLAGS = flags.FLAGS


def peak_memory_bytes() -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS"


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
    step_fn = jax.jit(
        steps.make_step_fn(config, model, load_lpips_params("alex")),
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
    t0 = time.perf_counter()
    step_fn = step_fn.lower(state, batches[0]).compile()  # ahead of time: compile alone
    compile_s = time.perf_counter() - t0
    xla_mem = step_fn.memory_analysis()
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batches[0])
    jax.block_until_ready(metrics)
    first_s = time.perf_counter() - t0
    times = []
    for i in range(FLAGS.steps):
        t0 = time.perf_counter()
        state, metrics = step_fn(state, batches[i % 2])
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    steady = times[FLAGS.warmup :] or times
    peak, peak_kind = peak_memory_bytes()
    return {
        "phase": phase,
        "device": str(jax.devices()[0].device_kind),
        "devices": jax.device_count(),
        "global_batch": config.data.batch_size,
        "crop": size,
        "num_samples": config.loss.num_samples,
        "remat": bool(config.model.remat),
        "compile_s": round(compile_s, 3),
        "first_step_s": round(first_s, 3),
        "seconds_per_step": round(float(np.median(steady)), 4),
        "steps_timed": len(steady),
        "compilations": trace_count(steps.step_trace_name(phase)) - traces_before,
        "peak_memory_gib": round(peak / 2**30, 3),
        "peak_memory_kind": peak_kind,
        "xla_temp_gib": round(getattr(xla_mem, "temp_size_in_bytes", 0) / 2**30, 3),
        "final_loss": float(metrics["loss"]),
    }


def main(argv):
    del argv
    for phase in FLAGS.phases.split(","):
        print(json.dumps(bench_phase(FLAGS.config, phase)), flush=True)


if __name__ == "__main__":
    app.run(main)
