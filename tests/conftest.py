"""Shared fixtures: the official reference data (skipped with a reason when absent)."""

from __future__ import annotations

import os
import pathlib
import tempfile

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The command-line entry points that tests call in-process (eval.main, the codec's main) and in
# subprocesses would otherwise turn on the user's persistent compilation cache
# (svi_jax/compilation.py, ~/.cache/svi_jax/xla); a test that wants a cache names its own.
os.environ.setdefault("SVI_JAX_COMPILATION_CACHE", "off")
# The training tests' own persistent cache, shared across test files and runs.
TEST_CACHE = os.environ.get(
    "SVI_TEST_JAX_CACHE", str(pathlib.Path(tempfile.gettempdir()) / "svi_jax_test_cache")
)


def use_test_compilation_cache() -> None:
    """Cache every compiled program of this test process in TEST_CACHE (compilations dominate
    the cost of the multi-step training tests on CPU)."""
    jax.config.update("jax_compilation_cache_dir", TEST_CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def reference_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("SVI_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference_set():
    """(npz, README text) of the official ProgSIC reference set A."""
    path = reference_dir() / "sic_small_A.npz"
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (set SVI_REFERENCE_DIR)")
    readme = reference_dir() / "README.md"
    text = readme.read_text() if readme.exists() else ""
    return np.load(path), text
