"""Exported models: round trip, hash semantics, and clear errors on bad exports."""

from __future__ import annotations

import json

import chex
import jax
import pytest

import svi_jax
from svi_jax.configs import tiny
from svi_jax.weights.export import (
    ExportError,
    load_exported_model,
    params_hash,
    save_exported_model,
)


@pytest.fixture(scope="module")
def tiny_params():
    cfg = tiny.get_config()
    model = svi_jax.build_model(cfg.model)
    return cfg, svi_jax.init_params(model, jax.random.PRNGKey(0))


def test_round_trip_from_workdir(tmp_path, tiny_params):
    cfg, params = tiny_params
    save_exported_model(tmp_path / "run" / "export", cfg, params, step=7)
    cfg2, params2, digest = load_exported_model(tmp_path / "run")
    assert json.loads(cfg2.model.to_json()) == json.loads(cfg.model.to_json())
    assert digest == params_hash(params, cfg)
    chex.assert_trees_all_equal(params2, params)


def test_hash_ignores_execution_only_fields_but_not_weights(tiny_params):
    cfg, params = tiny_params
    other = tiny.get_config()
    other.model.remat = True
    other.model.attention_chunk_windows = 32
    assert params_hash(params, cfg) == params_hash(params, other)
    other.model.window = 4
    assert params_hash(params, cfg) != params_hash(params, other)
    bumped = jax.tree_util.tree_map(lambda a: a, params)
    bumped["gs"]["outconv"]["bias"] = bumped["gs"]["outconv"]["bias"] + 1e-6
    assert params_hash(bumped, cfg) != params_hash(params, cfg)


def test_bad_exports_fail_clearly(tmp_path, tiny_params):
    cfg, params = tiny_params
    with pytest.raises(ExportError, match="not found"):
        load_exported_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no exported model"):
        load_exported_model(tmp_path / "empty")
    d = save_exported_model(tmp_path / "e", cfg, params)
    meta = json.loads((d / "export.json").read_text())
    (d / "export.json").write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(ExportError, match="export format 99"):
        load_exported_model(d)
    (d / "export.json").write_text(json.dumps(meta))
    blob = bytearray((d / "params.msgpack").read_bytes())
    blob[-1] ^= 0xFF
    (d / "params.msgpack").write_bytes(bytes(blob))
    with pytest.raises(ExportError, match="hash mismatch|do not fit"):
        load_exported_model(d)
