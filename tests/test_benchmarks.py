"""The benchmarks' FLOP accounting (benchmarks/_report.py): what MFU is computed from.

On GPUs XLA's cost analysis leaves out cuBLAS/cuDNN custom calls (measured on an H200: 0.47
TFLOP for a paper step whose jaxpr holds 8.4), so MFU counts the jaxpr's products; these tests
pin that count to hand-computed values, and MFU to the model without recomputation.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _benchmark_module(name: str):
    """benchmarks/<name>.py as a module, without putting benchmarks/ on sys.path (its eval.py
    would shadow the repository's eval.py for every later test)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_report = _benchmark_module("_report")


def test_jaxpr_flops_counts_products_scans_and_conds():
    a, b = jnp.ones((8, 16)), jnp.ones((16, 4))
    assert _report.traced_flops(jnp.dot, a, b) == 2 * 8 * 16 * 4

    w = jnp.ones((16, 16))
    body = 2 * 8 * 16 * 16
    flops = _report.traced_flops(
        lambda a, w: jax.lax.scan(lambda c, _: (c @ w, None), a, None, length=5)[0], a, w
    )
    assert flops == 5 * body
    both = _report.traced_flops(
        lambda p, a, w: jax.lax.cond(p, lambda: a @ w @ w, lambda: a @ w), True, a, w
    )
    assert both == 2 * body  # the larger branch

    conv = _report.traced_flops(
        lambda x, k: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        jnp.ones((2, 8, 8, 3)),
        jnp.ones((3, 3, 3, 5)),
    )
    assert conv == 2 * (2 * 8 * 8 * 5) * (3 * 3 * 3)


def test_traced_flops_takes_a_flax_module_as_a_static_argument():
    model = nn.Dense(7)
    x = jnp.ones((3, 5))
    params = model.init(jax.random.PRNGKey(0), x)

    @jax.jit
    def apply(params, x):
        return model.apply(params, x)

    def with_module(module, params, x):
        return module.apply(params, x)

    assert _report.traced_flops(apply, params, x) == 2 * 3 * 5 * 7
    assert _report.traced_flops(with_module, model, params, x) == 2 * 3 * 5 * 7


def test_mfu_counts_the_model_without_rematerialisation():
    """benchmarks/train_step.py: MFU from the step without remat, HFU from the step that runs; the
    recomputed forward passes make the second larger."""
    from svi_jax.configs import tiny
    from svi_jax.metrics.lpips import load_lpips_params
    from svi_jax.nn.model import build_model
    from svi_jax.training import steps

    config = tiny.get_config()
    config.phase = "main"
    config.model.remat = True
    model = build_model(config.model)
    state = jax.eval_shape(lambda: steps.init_state(config, model, jax.random.PRNGKey(0)))
    batch = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    lpips = load_lpips_params("alex")
    executed = _report.traced_flops(steps.make_step_fn(config, model, lpips), state, batch)
    no_remat = _report.traced_flops(
        steps.make_step_fn(config, model.clone(remat=False), lpips), state, batch
    )
    assert _report.model_step_flops(config, model, state, batch, lpips) == no_remat
    assert 1.05 * no_remat < executed < 2 * no_remat


def test_throughput_reports_the_fraction_of_a_measured_matmul_peak():
    peak = _report.measured_matmul_peak("float32", "highest", repeats=2, size=256)
    assert 1e6 < peak < 1e17  # FLOP/s of a real (small) GEMM on this machine
    perf = _report.throughput(3e12, 2.0, "float32", "highest", matmul_peak=6e12)
    assert perf["tflops"] == 1.5 and perf["of_matmul_peak"] == 0.25
    assert "of_matmul_peak" not in _report.throughput(3e12, 2.0, "float32", "highest")


def test_mfu_is_one_phrase_with_or_without_a_peak():
    assert _report.mfu_text({"mfu": None, "mfu_peak": "n/a (no peak figure for this device)"}) == (
        "MFU: n/a (no peak figure for this device)"
    )
    perf = {"mfu": 0.0723, "mfu_peak": "bfloat16 dense peak 989 TFLOP/s"}
    assert _report.mfu_text(perf) == "MFU 7.2% (bfloat16 dense peak 989 TFLOP/s)"


def test_compile_benchmark_lowers_every_function_it_lists():
    """benchmarks/compile.py's table (what the GPU suite runs): every jitted function of the
    tiny config traces and lowers with the arguments the benchmark builds (a signature change
    in the library broke its eval/validation row once, unnoticed)."""
    compile_benchmark = _benchmark_module("compile")

    from svi_jax.graph_size import compile_report

    labels = []
    for label, fn, args, kwargs in compile_benchmark.functions("tiny"):
        report = compile_report(fn, *args, compile=False, **kwargs)
        assert report.hlo_lowered > report.hlo_compute > 100, label
        row = compile_benchmark.table_row("tiny", label, report)
        # not compiled: every compile column "-" (never "nan"); the HLO sizes are there
        assert "nan" not in row and row.split()[4:6] == ["-", "-"], row
        assert row.split()[6:8] == [str(report.hlo_compute), str(report.hlo_lowered)], row
        labels.append(label)
    assert labels == [
        "init_params",
        *(f"step/{phase}" for phase in ("warming", "main", "gan")),
        "eval/validation",
        "eval/validation_lpips",
        "eval/estimated_bits",
        "eval/synthesize",
        "codec/analyze",
        "codec/reconstruct",
    ]


def test_profile_summary_tables_the_ops_of_a_trace(tmp_path):
    """benchmarks/_profile_summary.py reads a jax.profiler trace: every op kind the program
    ran, per-step times, and a clear error for a folder with no trace."""
    _profile_summary = _benchmark_module("_profile_summary")

    f = jax.jit(lambda a: jnp.tanh(a @ a).sum())
    a = jnp.ones((256, 256))
    f(a).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        for _ in range(2):
            f(a).block_until_ready()
    table = _profile_summary.summarize(tmp_path, steps=2)
    assert "ms of device time per step" in table
    kinds = [line.split()[0] for line in table.split("op kind", 1)[1].splitlines()[1:]]
    assert kinds and not any(k in ("while", "ThunkExecutor::Execute") for k in kinds)
    with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb"):
        _profile_summary.summarize(tmp_path / "empty")


def test_compile_benchmark_refuses_a_filter_that_matches_nothing(monkeypatch, capsys):
    """`--only nosuch` used to print an empty table with exit status 0."""
    compile_benchmark = _benchmark_module("compile")
    labels = ("init_params", "step/main")
    monkeypatch.setattr(
        compile_benchmark, "functions", lambda name: ((label, None, (), {}) for label in labels)
    )
    argv = ["compile.py", "--configs", "tiny", "--no-compile", "--only", "nosuch"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as caught:
        compile_benchmark.main()
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "'nosuch' matches no function" in err
    assert "init_params, step/main" in err
