"""Compile-time policy: XLA options per backend and jax's persistent compilation cache (issue 9).

Where compile time goes (XLA:CPU, jax 0.10.2, perf of the tiny main step's compile): LLVM
optimisation and code generation of the kernels 42% (IR passes 21%, machine code 18%), XLA's
MLIR fusion emitters 19%, HLO passes 7%, thunk emission 6%; malloc prominent throughout.
Identical fusions (same instructions and shapes) are compiled once: in a small program the cost
follows the *distinct* fusions (graph_size.fusion_counts), ~20-28 ms each even for a one-line
kernel (150 distinct slice-and-add kernels: 4.2 s; the same as 5 distinct dynamic slices:
0.35 s). In the training step the large kernels dominate instead: taking its 104-110 distinct
per-parameter update kernels out (runtime offsets into the flat update, or no optimizer at all)
left the compile at the same 29-34 CPU-s (interleaved runs, 2026-12-01). The tiny main step has
1,221 distinct of 3,101 fusions (1,280 of 3,274 before svi_jax.nn.layers' LayerNorm and
GELU); paper init_params 373 of 1,163 with Flax's per-parameter draw (since
svi_jax/nn/initializers.py: eager, 25 for the two flat draws; under jit, 124 with the
slices). The step's distinct ones come from the
8 Swin stages' shapes (each stage forward and backward, the scan's per-parameter slicing and
stacking), from per-parameter-leaf updates and gradient accumulations (one kernel per leaf
shape), the entropy models, the hyperprior and LPIPS: not from the number of blocks or samples
(an unrolled stage has as many distinct fusions as the scanned one).

XLA options measured on the tiny main step through `Lowered.compile(compiler_options=...)`
(compile CPU seconds and steady seconds per step, same process, loaded 2-core machine):
  (none)                                    36.8 s   0.54 s/step  (the reference)
  xla_backend_optimization_level=0          20.4 s   2.28 s/step  (4.2x slower steps; it also
                                                                  changes init_params' values)
  xla_backend_optimization_level=1 / 2      33.3 / 36.5 s  0.68 / 0.65 s/step (load noise)
  xla_llvm_disable_expensive_passes=True    37.7 s   0.82 s/step
  xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE   42.7 s  0.76 s/step
  xla_cpu_use_xnnpack=False                 30.7 s   0.51 s/step  (within the load noise)
and on paper init_params (compile CPU s): xla_cpu_use_fusion_emitters=False 26.0 vs 14.9;
xla_cpu_parallel_codegen_split_count 2 or 8, xla_cpu_enable_fast_math=False: no change.
xla_cpu_copy_insertion_use_region_analysis (XLA_FLAGS, tiny step): same kernels, no gain; the
jaxlib binary names xla_cpu_use_multi_output_fusion, xla_cpu_flatten_after_fusion,
xla_cpu_disable_loop_unrolling, xla_cpu_disable_slp_vectorizer, xla_cpu_optimize_for_size and
xla_cpu_disable_tiled_emitter, but jaxlib 0.10.2 rejects each as an unknown flag.
Only LLVM optimisation level 0 buys compile time, at 4x the step time: no backend gets an XLA
option from here (GPU/TPU were not measured: no accelerator was available to this work).

What does pay is not compiling twice: `enable_persistent_cache` turns on jax's on-disk cache of
compiled programs, keyed by the program, the jax/XLA versions, the compile options and the
device, so a second run of the same command (a resumed training, the next `eval.py`, another
image through the codec) loads each executable instead of compiling it (paper init_params
with Flax's draw: 9.8 s -> 2.7 s wall on this 2-core machine under load; 9.5 s cold idle).
"""

from __future__ import annotations

import os
import pathlib

import jax

CACHE_ENV = "SVI_JAX_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = pathlib.Path("~/.cache/svi_jax/xla")
_OFF = ("", "0", "off", "none", "false")
# Programs that compile faster than this are not written (a cache read costs ~10 ms).
MIN_COMPILE_SECONDS = 1.0


def cache_dir_from_env() -> pathlib.Path | None:
    """The cache folder named by $SVI_JAX_COMPILATION_CACHE (default ~/.cache/svi_jax/xla), or
    None when it is one of "", "0", "off", "none", "false" (cache disabled)."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return DEFAULT_CACHE_DIR.expanduser()
    if value.strip().lower() in _OFF:
        return None
    return pathlib.Path(value).expanduser()


def enable_persistent_cache(
    path: str | os.PathLike | None = None, min_compile_seconds: float = MIN_COMPILE_SECONDS
) -> str | None:
    """Turn on jax's persistent compilation cache for this process; returns its folder or None.

    Call it before the first compilation (the command-line entry points do). `path` defaults to
    `cache_dir_from_env()`. A folder the user already gave jax ($JAX_COMPILATION_CACHE_DIR or
    jax.config) wins and is returned unchanged. The cache runs code it reads back: keep it in a
    folder only you can write (the default is under your home). A folder that cannot be created
    leaves the cache off (compilation is unaffected).
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    folder = pathlib.Path(path).expanduser() if path is not None else cache_dir_from_env()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return str(folder)
