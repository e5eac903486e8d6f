"""svi_jax.compilation (the persistent compilation cache) and optim.global_norm.

The cache tests run in a subprocess: jax's cache is process-wide state, and the test session
itself keeps it off (conftest.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from svi_jax.training.optim import AUX, MODEL, global_norm

ROOT = pathlib.Path(__file__).resolve().parents[1]

_PROBE = """
import json, jax, jax.numpy as jnp
from svi_jax.compilation import enable_persistent_cache
folder = enable_persistent_cache(min_compile_seconds=0.0)
jax.jit(lambda a: jnp.sin(a) * 2.0 + 1.0)(jnp.ones(7)).block_until_ready()
print(json.dumps({"folder": folder, "config": jax.config.jax_compilation_cache_dir}))
"""


def _probe(env_updates: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(env_updates, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cache_writes_the_compiled_program_to_the_named_folder(tmp_path):
    folder = tmp_path / "xla"
    out = _probe({"SVI_JAX_COMPILATION_CACHE": str(folder)})
    assert out["folder"] == out["config"] == str(folder)
    assert any(folder.iterdir()), "no executable written to the cache folder"


def test_cache_off_leaves_jax_uncached(tmp_path):
    out = _probe({"SVI_JAX_COMPILATION_CACHE": "off", "HOME": str(tmp_path)})
    assert out["folder"] is None and not out["config"]
    assert not (tmp_path / ".cache").exists()


def test_users_jax_cache_folder_wins(tmp_path):
    mine = tmp_path / "mine"
    out = _probe(
        {
            "SVI_JAX_COMPILATION_CACHE": str(tmp_path / "ours"),
            "JAX_COMPILATION_CACHE_DIR": str(mine),
        }
    )
    assert out["folder"] == out["config"] == str(mine)
    assert not (tmp_path / "ours").exists()


def test_global_norm_is_the_norm_of_all_leaves():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    tree = {
        "a": jax.random.normal(keys[0], (3, 5)),
        "b": [jax.random.normal(keys[1], (7,)), 1e-3 * jax.random.normal(keys[2], (2, 2, 2))],
        "c": jnp.zeros(()),
    }
    flat = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])
    np.testing.assert_allclose(float(global_norm(tree)), np.linalg.norm(flat), rtol=1e-6)
    np.testing.assert_allclose(float(global_norm(tree)), float(optax.tree.norm(tree)), rtol=1e-6)
    labels = {"a": MODEL, "b": [AUX, MODEL], "c": MODEL}  # grouped as the training step does
    np.testing.assert_allclose(float(global_norm(tree, labels)), np.linalg.norm(flat), rtol=1e-6)
