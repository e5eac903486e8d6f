"""Exported models: the one on-disk format every inference tool (codec, eval) reads.

An export is a directory holding `config.json` (the full ml_collections config as JSON),
`params.msgpack` (flax.serialization of the params pytree) and `export.json` (format version,
parameter hash, provenance). train.py writes one to `<workdir>/export`; an imported official
checkpoint can be exported the same way. The parameter hash identifies the model in codec
bitstreams, so decoding with another model fails loudly. The codec's integer entropy model
(svi_jax.codec.integer_model) is derived from the parameters by exact arithmetic, so the hash
covers it too; `export.json` also records its digest (`entropy_model_digest`), which loading
re-derives and checks: a mismatch means this machine's svi_jax derives other coding tables
than the exporting one did (a determinism failure), never silently different files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

import flax.serialization
import jax
import ml_collections
import numpy as np

from svi_jax import safety
from svi_jax.nn.model import build_model, init_params

EXPORT_FORMAT_VERSION = 2  # 2: stacked (scanned) Swin blocks, integer entropy model digest
EXPORT_SUBDIR = "export"
# Model-config fields that change how a step is executed, not what the model computes: they
# stay out of the hash so a checkpoint trained with remat decodes files of one trained without.
EXECUTION_ONLY_FIELDS = frozenset({"remat", "attention_chunk_windows"})


class ExportError(ValueError):
    """The path is not a usable exported model."""


def params_hash(params: dict, config: ml_collections.ConfigDict | None = None) -> str:
    """sha256 over the model config and every parameter (path, dtype, shape, bytes)."""
    h = hashlib.sha256()
    if config is not None:
        model = {k: v for k, v in config.model.to_dict().items() if k not in EXECUTION_ONLY_FIELDS}
        h.update(json.dumps(model, sort_keys=True, default=list).encode())
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_exported_model(
    directory: str | os.PathLike, config: ml_collections.ConfigDict, params: dict, **provenance
) -> pathlib.Path:
    """Write an export atomically (temp dir + rename); returns the directory."""
    target = pathlib.Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    params = jax.tree_util.tree_map(np.asarray, params)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    os.chmod(tmp, safety.new_file_mode(folder=True))  # mkdtemp makes 0700; mkdir's mode instead
    (tmp / "config.json").write_text(config.to_json(indent=2))
    (tmp / "params.msgpack").write_bytes(flax.serialization.to_bytes(params))
    digest = params_hash(params, config)
    meta = {
        "format_version": EXPORT_FORMAT_VERSION,
        "params_hash": digest,
        "entropy_model_digest": _entropy_digest(params, config, digest),
        **provenance,
    }
    (tmp / "export.json").write_text(json.dumps(meta, indent=2))
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(target)
    return target


def _entropy_digest(params: dict, config: ml_collections.ConfigDict, key: str) -> str | None:
    """Hex digest of the codec's integer entropy model; None when the parameters define none
    (non-finite values: such an export still saves and loads, the codec refuses it)."""
    from svi_jax.codec import integer_model  # the codec imports this module

    try:
        model = integer_model.derive(params, config.model.num_slices, key)
    except ValueError:  # IntegerModelError / TableError
        return None
    return model.digest[:8].hex()


def resolve_export_dir(path: str | os.PathLike) -> pathlib.Path:
    """Accept an export directory or a train.py workdir (which holds `export/`)."""
    p = pathlib.Path(path)
    if (p / "export.json").exists():
        return p
    if (p / EXPORT_SUBDIR / "export.json").exists():
        return p / EXPORT_SUBDIR
    if not p.exists():
        raise ExportError(f"checkpoint not found: {p}")
    raise ExportError(
        f"{p} holds no exported model (expected {p}/export.json or {p}/{EXPORT_SUBDIR}/); "
        "train one with `python train.py` or import an official checkpoint"
    )


def load_exported_model(path: str | os.PathLike):
    """-> (config, params, params_hash). Verifies format version and the parameter hash."""
    d = resolve_export_dir(path)
    try:
        meta = json.loads((d / "export.json").read_text())
        config = ml_collections.ConfigDict(json.loads((d / "config.json").read_text()))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"unreadable export in {d}: {e}") from e
    version = meta.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise ExportError(
            f"{d} has export format {version}; this svi_jax reads {EXPORT_FORMAT_VERSION}"
        )
    model = build_model(config.model)
    template = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
    try:
        params = flax.serialization.from_bytes(template, (d / "params.msgpack").read_bytes())
    except Exception as e:  # msgpack/flax raise assorted types on corrupt or foreign data
        raise ExportError(f"params in {d} do not fit its config: {e}") from e
    digest = params_hash(params, config)
    if digest != meta.get("params_hash"):
        raise ExportError(f"parameter hash mismatch in {d}: the export is corrupt")
    recorded = meta.get("entropy_model_digest")
    if recorded is not None and recorded != _entropy_digest(params, config, digest):
        raise ExportError(
            f"{d}: this svi_jax derives another integer entropy model from the export's "
            f"parameters than the exporting one (digest {recorded}); files would not decode "
            "across the two. A determinism failure of svi_jax: please report it"
        )
    return config, params, digest


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_mismatches(model, params) -> list[str]:
    """Where `params` (a dict tree of arrays) differs from what `model` builds: one line per
    missing, unexpected or misshaped leaf, e.g. "ha/conv_0/kernel is (3, 3, 64, 24), the
    config needs (3, 3, 64, 48)". Empty when every path and shape fits.

    The model's shapes come from `jax.eval_shape(init_params)` (abstract: nothing is drawn
    or compiled). Only shapes can be compared: a config change that moves no shape (none of
    the shipped fields; the attention heads size each Swin block's relative-position table)
    cannot be seen here."""
    want = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    want = {_path_name(p): tuple(s.shape) for p, s in jax.tree_util.tree_leaves_with_path(want)}
    have = {
        _path_name(p): tuple(np.shape(a)) for p, a in jax.tree_util.tree_leaves_with_path(params)
    }
    out = []
    for name, shape in want.items():
        if name not in have:
            out.append(f"{name} is missing (the config needs {shape})")
        elif have[name] != shape:
            out.append(f"{name} is {have[name]}, the config needs {shape}")
    out += [
        f"{name} {have[name]} is not in the config's model" for name in have if name not in want
    ]
    return out


def check_params_fit(model, params, shown: int = 3) -> None:
    """Raises ValueError "params do not fit the config: <first `shown` mismatches>; ... (N
    mismatches)" when `param_mismatches(model, params)` is not empty."""
    problems = param_mismatches(model, params)
    if problems:
        more = "; ..." if len(problems) > shown else ""
        raise ValueError(
            f"params do not fit the config: {'; '.join(problems[:shown])}{more} "
            f"({len(problems)} mismatch{'es' if len(problems) > 1 else ''})"
        )
