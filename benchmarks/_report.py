"""Shared benchmark reporting: compile timing, FLOPs, MFU, peak memory, official ratios.

Used by benchmarks/train_step.py and benchmarks/eval.py (import as `_report` when run as
scripts: the benchmarks folder is on sys.path).

- FLOPs: the model's FLOPs counted from the jaxpr (dot_general and convolutions, scan bodies
  times their length), the numerator of MFU. XLA's own count of the compiled executable
  (`compiled.cost_analysis()["flops"]`) is printed as a cross-check only: it counts a
  while-loop body once (scanned code) and, on GPUs, leaves out every cuBLAS/cuDNN custom call
  (measured on an H200: 0.47 TFLOP for a paper step whose jaxpr holds 8.4).
- MFU: model FLOPs per second over the device's peak for the compute dtype (table below, dense
  tensor-core figures; "n/a" where the device is not listed, e.g. CPUs). A step traced with
  rematerialisation does more work than the model needs (the recomputed forward passes):
  train_step.py counts MFU from the step without remat and HFU (hardware FLOPs) with it.
- Official figures: the official PyTorch code measured on the same device kinds (issue 9).
"""

from __future__ import annotations

import functools
import resource
import time

import jax
import jax.numpy as jnp
from flax import linen as nn

from svi_jax.graph_size import product_flops

# Official ProgSIC (PyTorch, fp32 as shipped, cuDNN deterministic), measured for issue 9:
# train step = batch 2, 256x256, M = 5, main phase; test() = one level of a 768x512 image.
OFFICIAL = {
    "cpu": {
        "source": "issue 9: official code on the 2-core CPU dev machine (torch, fp32)",
        "train_step_s": 67.2,
        "train_step_peak_gib": 21.5,
        "test_768x512_s": 21.7,
    },
    "h200": {
        "source": "issue 9: official code on one NVIDIA H200 (torch, fp32, cuDNN deterministic)",
        "train_step_s": 0.283,
        "train_step_peak_gib": 20.2,
        "test_768x512_s": 0.085,
        "test_768x512_peak_gib": 1.9,
    },
}

# Peak dense FLOP/s by device kind (substring of jax's device_kind, lower case) and compute
# mode. Datasheet figures (NVIDIA H100/H200 SXM: 989 TFLOP/s bf16 dense, 494 TF32 dense, 67
# FP32 non-tensor; A100: 312 / 156 / 19.5; TPU: Google's per-chip bf16 figures) and, where
# known, a measured matmul peak ("bfloat16_measured": ~790 TFLOP/s on the H200 lent here).
PEAK_FLOPS = {
    "h200": {"bfloat16": 989e12, "bfloat16_measured": 790e12, "tf32": 494e12, "float32": 67e12},
    "h100": {"bfloat16": 989e12, "tf32": 494e12, "float32": 67e12},
    "a100": {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12},
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12 / 6},
    "tpu v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 6},
    "tpu v5p": {"bfloat16": 459e12, "float32": 459e12 / 6},
    "tpu v6": {"bfloat16": 918e12, "float32": 918e12 / 6},
}


def device_key(kind: str | None = None) -> str | None:
    """'cpu', a PEAK_FLOPS / OFFICIAL key, or None for an unlisted accelerator."""
    kind = (kind or jax.devices()[0].device_kind).lower()
    if jax.default_backend() == "cpu":
        return "cpu"
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in kind:
            return key
    return None


def peak_flops(dtype: str, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s, what it is) of one device for the compute dtype / precision policy."""
    table = PEAK_FLOPS.get(device_key() or "", {})
    mode = "bfloat16" if dtype == "bfloat16" else ("tf32" if precision == "default" else "float32")
    if mode == "tf32" and "tf32" not in table:
        mode = "float32" if "tpu" not in (device_key() or "") else "bfloat16"
    if mode not in table:
        return None, "n/a (no peak figure for this device)"
    return table[mode], f"{mode} dense peak {table[mode] / 1e12:.0f} TFLOP/s"


_MATMUL_SIZE = {"cpu": 2048}  # square GEMM edge: ~17 GFLOP on a CPU, 8192 (1.1 TFLOP) elsewhere


@functools.cache  # one measurement per run and dtype: train_step.py reports several phases
def measured_matmul_peak(
    dtype: str, precision: str, repeats: int = 5, size: int | None = None
) -> float:
    """FLOP/s of one large square GEMM (n x n @ n x n, best of `repeats` after a warm-up call)
    in the benchmark's compute dtype and precision, measured now on the default device: the
    roofline a dense model can reach on this machine (a CPU has no datasheet entry in
    PEAK_FLOPS; on GPUs it says how far the datasheet figure is out of reach)."""
    n = size or _MATMUL_SIZE.get(jax.default_backend(), 8192)
    lax_precision = "highest" if precision == "highest" else "default"
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), dtype)
    b = jax.random.normal(key_b, (n, n), dtype)
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=lax_precision))
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def xla_flops(compiled) -> float | None:
    """FLOPs of one run of a compiled executable by XLA's cost analysis (None if absent)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per module
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def jaxpr_flops(jaxpr) -> float:
    """2*M*N*K FLOPs of every dot_general and convolution of a (closed) jaxpr, recursively;
    scan bodies count `length` times, cond branches their maximum, while bodies once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        flops = product_flops(eqn)
        if flops is not None:
            total += flops
            continue
        subs = []
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    subs.append(jaxpr_flops(sub))
        if not subs:
            continue
        if name == "cond":
            total += max(subs)
        elif name == "scan":
            total += eqn.params["length"] * sum(subs)
        else:
            total += sum(subs)
    return total


def traced_flops(fn, *args) -> float:
    """jaxpr_flops of fn(*args), traced only (nothing compiles or runs); flax modules among
    `args` are static."""
    static = tuple(i for i, a in enumerate(args) if isinstance(a, nn.Module))
    return jaxpr_flops(jax.make_jaxpr(fn, static_argnums=static)(*args))


def model_step_flops(config, model, state, batch, lpips_params) -> float:
    """FLOPs of one training step (phase `config.phase`) of the model as defined (jaxpr count,
    all devices), with rematerialisation off: what MFU counts (HFU counts the step that runs).
    Traced only."""
    from svi_jax.training import steps

    step = steps.make_step_fn(config, model.clone(remat=False), lpips_params)
    return traced_flops(step, state, batch)


def compile_timed(jitted, *args) -> tuple[object, dict]:
    """Trace + lower, then compile `jitted` for `args`; (compiled, timings and FLOPs)."""
    t0 = time.perf_counter()
    lowered = jitted.lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    info = {"lower_s": round(t1 - t0, 2), "compile_s": round(t2 - t1, 2)}
    info["flops_xla"] = xla_flops(compiled)
    try:
        mem = compiled.memory_analysis()
        info["xla_temp_gib"] = round(mem.temp_size_in_bytes / 2**30, 3)
    except Exception:  # not every backend reports it
        pass
    return compiled, info


def peak_memory() -> tuple[float, str]:
    """(GiB, kind): the device's peak_bytes_in_use when reported, else the process's peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30, "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30, "host peak RSS"


def throughput(
    flops: float | None,
    seconds: float,
    dtype: str,
    precision: str,
    matmul_peak: float | None = None,
) -> dict:
    """Achieved TFLOP/s and MFU (per device: `flops` is one device's program); with
    `matmul_peak` (FLOP/s, `measured_matmul_peak`) also the fraction of it reached."""
    if not flops or seconds <= 0:
        return {"tflops": None, "mfu": None, "mfu_peak": "n/a (no FLOP count)"}
    achieved = flops / seconds
    peak, what = peak_flops(dtype, precision)
    out = {"tflops": float(f"{achieved / 1e12:.4g}"), "mfu": None, "mfu_peak": what}
    if matmul_peak:
        out["of_matmul_peak"] = round(achieved / matmul_peak, 4)
    if peak:
        out["mfu"] = round(achieved / peak, 4)
        measured = PEAK_FLOPS[device_key()].get(f"{dtype}_measured")
        if measured:
            out["mfu_measured_peak"] = round(achieved / measured, 4)
    return out


# What the printed figures mean, said the same way by train_step.py and eval.py.
MATMUL_PEAK_NOTE = (
    "measured now (one large GEMM, this process): a loaded machine lowers it (1.6-2.1x seen "
    "between runs on a shared CPU), and with it the fraction of it reached"
)
FLOPS_XLA_NOTE = (
    "XLA's cost analysis: counts a scanned (while-loop) body once, not once per iteration "
    "(so lower than the jaxpr's count) and leaves out GPU library calls; MFU uses the jaxpr"
)


def mfu_text(perf: dict) -> str:
    """'MFU 7.2% (bfloat16 dense peak 989 TFLOP/s)' or 'MFU: n/a (no peak figure for this
    device)' from a `throughput` result: one phrase, never "None"."""
    if perf.get("mfu") is None:
        return f"MFU: {perf['mfu_peak']}"
    return f"MFU {perf['mfu']:.1%} ({perf['mfu_peak']})"


def official_ratios(seconds: float, peak_gib: float | None, what: str) -> dict:
    """official / ours for time (> 1: faster than official) and ours / official for memory
    (< 1: less memory), against the official figure `what` ('train_step' or 'test_768x512')
    of this device kind; empty when there is none."""
    ref = OFFICIAL.get(device_key() or "")
    if not ref or f"{what}_s" not in ref:
        return {"official": "n/a (no official figure for this device kind)"}
    out = {
        "official_s": ref[f"{what}_s"],
        "speedup_vs_official": round(ref[f"{what}_s"] / seconds, 3),
        "official_source": ref["source"],
    }
    if peak_gib is not None and f"{what}_peak_gib" in ref:
        out["official_peak_gib"] = ref[f"{what}_peak_gib"]
        out["memory_vs_official"] = round(peak_gib / ref[f"{what}_peak_gib"], 3)
    return out
