"""Data parallelism: K steps on 1 device equal K steps on 4 (same global batch)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import chex
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = os.environ.get(
    "SVI_TEST_JAX_CACHE", str(pathlib.Path(tempfile.gettempdir()) / "svi_jax_test_cache")
)

# Runs in a fresh interpreter: XLA_FLAGS must be set before jax is imported.
SCRIPT = """
import jax
from svi_jax.configs import tiny
from svi_jax.training import train_and_evaluate
assert jax.device_count() == {devices}, jax.devices()
cfg = tiny.get_config()
cfg.model.analysis_depths = (1, 1, 1, 1)  # the sharding does not depend on depth
cfg.model.synthesis_depths = (1, 1, 1, 1)
cfg.data.batch_size = 4  # global batch: 1 per device on 4 devices
cfg.data.val_crop = 64
cfg.train.update(num_steps=3, log_every=1, checkpoint_every=3, eval_every=-1, image_every=0)
train_and_evaluate(cfg, {workdir!r})
"""


def run(devices: int, workdir: pathlib.Path):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PLATFORMS="cpu")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    code = SCRIPT.format(root=str(ROOT), devices=devices, workdir=str(workdir))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    from svi_jax.weights.export import load_exported_model

    _, params, _ = load_exported_model(workdir)
    return losses, params


@pytest.mark.slow
def test_one_device_equals_four_devices(tmp_path):

    loss1, params1 = run(1, tmp_path / "one")
    loss4, params4 = run(4, tmp_path / "four")
    assert len(loss1) == 3
    np.testing.assert_allclose(loss4, loss1, rtol=2e-5)
    chex.assert_trees_all_close(params4, params1, rtol=1e-4, atol=1e-6)
