"""Compile-time policy: XLA options per backend and jax's persistent compilation cache (issue 9).

Where compile time goes (tiny main step, XLA:CPU, jax 0.10.2; benchmarks/compile.py): about 95%
of it is XLA compiling each fused kernel of the optimised module on its own (MLIR fusion
emitters, then LLVM optimisation and code generation, with malloc prominent throughout), so it
grows with the number of fusions (3,273 for the tiny main step), not with FLOPs. Options
measured on that step through `Lowered.compile(compiler_options=...)` (compile CPU seconds, then
steady seconds per step, on a loaded 2-core machine):

  (none)                                   ~33 s      0.44 s/step  (the reference)
  xla_backend_optimization_level=0         ~20 s      ~2 s/step    (4x slower steps; it also
                                                                   changes init_params' values)
  xla_backend_optimization_level=1 or 2    no gain    no change
  xla_llvm_disable_expensive_passes=True   no gain    slower
  xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE, xla_cpu_use_xnnpack=False,
  xla_cpu_parallel_codegen_split_count, xla_cpu_use_fusion_emitters=False   no gain (the last
                                                                   one: 1.7x slower compile)

None of them pays on CPU, so no backend gets an XLA option from here (GPU/TPU were not measured:
no accelerator was available). What does pay is not compiling twice: `enable_persistent_cache`
turns on jax's on-disk cache of compiled programs, keyed by the program, the jax/XLA versions,
the compile options and the device, so a second run of the same command (a resumed training, the
next `eval.py`, another image through the codec) loads each executable instead of compiling it
(paper init_params: 9.8 s -> 2.7 s wall, measured on this 2-core machine under load).
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
