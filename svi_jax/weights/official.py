"""Import an official PyTorch ProgSIC state_dict into an svi_jax params pytree.

Accepted inputs: a `.npz` of arrays keyed by the official state_dict names (optionally with a
`w/` prefix, as in the reference files), a `.pth`/`.pt` file (read without torch by
`svi_jax.weights.torch_file`), or a plain dict of arrays. Conversion is transposes only (MODEL.md:
channel order is kept): Linear (out, in) -> (in, out); Conv2d OIHW -> HWIO; ConvTranspose2d
(in, out, kH, kW) -> (kH, kW, in, out) (the spatial flip happens in the layer, not here).
Buffers that are rebuilt from the config (Swin attention masks and position indices, the
context mask, CompressAI's empty coding tables and constant bounds) and the LPIPS/DISTS
sub-networks are ignored; the context mask, when present, is checked against ours.

Swin blocks: the official `layers.<i>.blocks.<j>.*` of one stage are stacked along a leading
axis (j) in our `layers_<i>_blocks` parameters, which the stage scans over (svi_jax.nn.swin).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import jax
import numpy as np

from svi_jax.nn.context import context_mask
from svi_jax.nn.model import ProgressiveSIC, init_params
from svi_jax.weights.torch_file import TorchFileError, load_state_dict_file


class CheckpointImportError(ValueError):
    """The state_dict does not fit the model described by the config."""


_IGNORED = re.compile(
    r"(\.attn_mask$|\.relative_position_index$|^context_model\.layer\.mask$"
    r"|^entropy_bottleneck\.(_offset|_quantized_cdf|_cdf_length|target"
    r"|likelihood_lower_bound\.bound)$|^gaussian_conditional\.|^lpips\.|^dists\.)"
)


_BLOCK = "<block>"  # stands for the block index j inside a stacked stage's official keys


def _official_module_path(parts: list[str]) -> str:
    top, rest = parts[0], parts[1:]
    out = [top]
    for p in rest:
        m = re.fullmatch(r"layers_(\d+)_blocks", p)
        if m:
            out += ["layers", m.group(1), "blocks", _BLOCK]
            continue
        m = re.fullmatch(r"layers_(\d+)_(downsample|upsample)", p)
        if m:
            out += ["layers", m.group(1), m.group(2)]
            continue
        m = re.fullmatch(r"(?:de)?conv_(\d+)", p)
        if m and top in ("ha", "hs"):
            out.append(m.group(1))
            continue
        if m and top == "entropy_parameters":
            out += ["layer", m.group(1)]
            continue
        out.append(p)
    if top == "context_model":
        out.insert(1, "layer")
    return ".".join(out)


def _official_name(path: tuple[str, ...]) -> tuple[str, str]:
    """Our param path -> (official key, transform kind); the key of a stacked Swin-block
    parameter holds `_BLOCK` where the official block index goes."""
    *mods, leaf = path
    module = _official_module_path(list(mods))
    if mods[0] == "entropy_bottleneck":
        name = leaf if leaf == "quantiles" else "_" + leaf
        return f"entropy_bottleneck.{name}", "same"
    if leaf == "relative_position_bias_table":
        return f"{module}.{leaf}", "same"
    if leaf == "scale":
        return f"{module}.weight", "same"
    if leaf == "bias":
        return f"{module}.bias", "same"
    if mods[0] == "hs":
        return f"{module}.weight", "convT"
    return f"{module}.weight", "kernel"


def _official_keys(key: str, value_shape: tuple[int, ...]) -> list[str]:
    """The official keys of one of our parameters: one per block of a stacked stage."""
    if _BLOCK not in key:
        return [key]
    return [key.replace(_BLOCK, str(j)) for j in range(value_shape[0])]


# Official layout -> ours, per kind; each is its own inverse except the conv kernel.
_TO_OURS = {"convT": (2, 3, 0, 1), "kernel4d": (2, 3, 1, 0)}
_FROM_OURS = {"convT": (2, 3, 0, 1), "kernel4d": (3, 2, 0, 1)}


def _convert(value: np.ndarray, kind: str, axes: dict) -> np.ndarray:
    if kind == "same":
        return value
    if kind == "kernel" and value.ndim == 2:  # Linear (out, in) <-> Dense (in, out)
        return value.T
    return value.transpose(axes["convT" if kind == "convT" else "kernel4d"])


def _to_ours(value: np.ndarray, kind: str) -> np.ndarray:
    return _convert(value, kind, _TO_OURS)


def _from_ours(value: np.ndarray, kind: str) -> np.ndarray:
    return _convert(value, kind, _FROM_OURS)


def load_state_dict(source: str | os.PathLike | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read a state_dict-like mapping of name -> numpy array from a file or a mapping."""
    if isinstance(source, Mapping):
        items = dict(source)
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise CheckpointImportError(f"checkpoint file not found: {path}")
        if not path.endswith((".npz", ".pth", ".pt", ".ckpt")):
            raise CheckpointImportError(f"unsupported checkpoint format: {path} (.npz or .pth)")
        try:
            items = load_state_dict_file(path)  # .pth read without torch
        except TorchFileError as e:
            raise CheckpointImportError(str(e)) from None
    if any(k.startswith("w/") for k in items):
        items = {k[2:]: v for k, v in items.items() if k.startswith("w/")}
    return {k.removeprefix("module."): np.asarray(v) for k, v in items.items()}


def import_official_state_dict(
    model: ProgressiveSIC, source: str | os.PathLike | Mapping[str, np.ndarray]
) -> dict:
    """Official state_dict -> params pytree for `model`; clear errors on any mismatch."""
    state = load_state_dict(source)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    used, leaves, problems = set(), [], []
    for path, spec in flat:
        names = tuple(p.key for p in path)
        template, kind = _official_name(names)
        stacked = _BLOCK in template  # one official tensor per block, stacked on axis 0
        block_shape = spec.shape[1:] if stacked else spec.shape
        keys, values = _official_keys(template, spec.shape), []
        for key in keys:
            if key not in state:
                problems.append(f"missing key {key} (for {'/'.join(names)})")
                continue
            value = _to_ours(state[key], kind)
            if value.shape != block_shape:
                problems.append(
                    f"shape mismatch for {key}: checkpoint {state[key].shape} gives"
                    f" {value.shape}, model expects {block_shape}"
                )
            values.append(value.astype(np.float32))
            used.add(key)
        complete = len(values) == len(keys) and all(v.shape == block_shape for v in values)
        leaves.append(None if not complete else np.stack(values) if stacked else values[0])
    extra = sorted(k for k in state if k not in used and not _IGNORED.search(k))
    problems += [f"unexpected key {k} {tuple(state[k].shape)}" for k in extra]
    if "context_model.layer.mask" in state and not problems:
        ours = context_mask(model.latent_channels, model.num_slices).transpose(3, 2, 0, 1)
        if not np.array_equal(state["context_model.layer.mask"], ours):
            problems.append("context_model.layer.mask differs from the mask this config builds")
    if problems:
        head = f"checkpoint does not match the model config ({len(problems)} problems):"
        raise CheckpointImportError("\n  ".join([head, *problems[:20]]))
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(v) for v in leaves])


def export_official_state_dict(params: dict) -> dict[str, np.ndarray]:
    """params pytree -> official state_dict names and layouts (the inverse transposes)."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        template, kind = _official_name(tuple(p.key for p in path))
        value = np.asarray(value)
        keys = _official_keys(template, value.shape)
        blocks = list(value) if _BLOCK in template else [value]
        for key, block in zip(keys, blocks, strict=True):
            out[key] = _from_ours(block, kind)
    return out
