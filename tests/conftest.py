"""Shared fixtures: the official reference data (skipped with a reason when absent)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The command-line entry points that tests call in-process (eval.main, the codec's main) and in
# subprocesses would otherwise turn on the user's persistent compilation cache
# (svi_jax/compilation.py, ~/.cache/svi_jax/xla); a test that wants a cache names its own.
os.environ.setdefault("SVI_JAX_COMPILATION_CACHE", "off")


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
