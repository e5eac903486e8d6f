"""Import an official PyTorch ProgSIC state_dict into an svi_jax params pytree.

Accepted inputs (`ACCEPTED_SUFFIXES`, any case): a `.npz` of arrays keyed by the official
state_dict names (optionally with a `w/` prefix, as in the reference files), a `torch.save`
file named `.pth`, `.pt`, `.ckpt`, `.tar` or `.pth.tar` (read without torch by
`svi_jax.weights.torch_file`; zip or legacy layout and npz are told apart by content), or a
plain dict of arrays. A training checkpoint is unwrapped: {"state_dict" | "model" |
"model_state_dict": sd, ...}, or a dict whose one dict value holds tensors ({"net": sd,
"epoch": 3}); a `module.` (DataParallel) prefix is dropped. Conversion is transposes only (MODEL.md:
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
from svi_jax.weights.torch_file import TorchFileError, load_state_dict_file, unwrap_state_dict

ACCEPTED_SUFFIXES = (".npz", ".pth", ".pt", ".ckpt", ".tar")  # .tar covers .pth.tar


class CheckpointImportError(ValueError):
    """An official checkpoint cannot be imported: the file is missing, unreadable (not a
    PyTorch file / npz, truncated or damaged, a directory, an unsupported suffix) or holds no
    ProgSIC parameters. `CheckpointMismatchError` (a subclass) is the one case where it is a
    ProgSIC state dict for another model config."""

    problems: tuple[str, ...] = ()


class CheckpointMismatchError(CheckpointImportError):
    """The state dict holds ProgSIC parameters but not the model the config describes
    (missing / unexpected keys, other shapes): most likely another config. The message
    summarises; `problems` lists every mismatch, one line each."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = tuple(problems)


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
    """Read a state_dict-like mapping of name -> numpy array from a file or a mapping.

    Raises CheckpointImportError for a missing path, a directory, a suffix not in
    `ACCEPTED_SUFFIXES`, an unreadable / truncated file, or one without tensors (the message
    lists its top-level keys)."""
    if isinstance(source, Mapping):
        items = dict(unwrap_state_dict(dict(source)))
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            raise CheckpointImportError(f"{path} is a directory, not a checkpoint file")
        if not os.path.exists(path):
            raise CheckpointImportError(f"checkpoint file not found: {path}")
        if not path.lower().endswith(ACCEPTED_SUFFIXES):
            raise CheckpointImportError(
                f"unsupported checkpoint format: {path} ({', '.join(ACCEPTED_SUFFIXES)} or "
                ".pth.tar)"
            )
        try:
            items = load_state_dict_file(path)  # torch files read without torch
        except TorchFileError as e:
            if e.top_level_keys is not None:
                raise CheckpointImportError(_none_found(path, e.top_level_keys)) from None
            raise CheckpointImportError(str(e)) from None
        except OSError as e:  # unreadable (permissions, I/O): one line, not a traceback
            raise CheckpointImportError(f"{path}: cannot read ({e.strerror or e})") from None
    if any(k.startswith("w/") for k in items):
        items = {k[2:]: v for k, v in items.items() if k.startswith("w/")}
    return {k.removeprefix("module."): np.asarray(v) for k, v in items.items()}


def _none_found(source, keys) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} keys)" if len(keys) > 10 else "")
    where = f" in {os.fspath(source)}" if isinstance(source, str | os.PathLike) else ""
    return f"no ProgSIC parameters found{where}; top-level keys: {shown or '(none)'}"


def _summary(model: ProgressiveSIC, state: dict) -> str:
    """The config field a mismatch most likely comes from, e.g. "checkpoint has 128 latent
    channels, the config 512" (from the context model's input channels), or ""."""
    ctx, embed = state.get("context_model.layer.weight"), state.get("ga.patch_embed.proj.weight")
    if ctx is not None and ctx.ndim == 4 and ctx.shape[1] != model.latent_channels:
        return f"checkpoint has {ctx.shape[1]} latent channels, the config {model.latent_channels}"
    if embed is not None and embed.ndim == 4 and embed.shape[0] != model.analysis_dims[0]:
        return (
            f"checkpoint's g_a starts with {embed.shape[0]} channels, the config's "
            f"analysis_dims[0] is {model.analysis_dims[0]}"
        )
    return ""


def import_official_state_dict(
    model: ProgressiveSIC, source: str | os.PathLike | Mapping[str, np.ndarray]
) -> dict:
    """Official ProgSIC state_dict -> params pytree for `model` (float32 numpy arrays in the
    layout `init_params(model, ...)` gives); transposes only (module docstring).

    source: a path (`.npz`, `.pth`, `.pt`, `.ckpt`, `.tar`, `.pth.tar`, any case; read
    without torch) or a mapping of official names to arrays; training-checkpoint wrappers
    are unwrapped (module docstring).

    Raises:
      CheckpointMismatchError: ProgSIC parameters that do not fit the config (missing,
        unexpected or misshaped keys; a differing context mask). One-line summary with the
        count and the first 3 problems; `error.problems` holds them all.
      CheckpointImportError: a missing path or directory, an unsupported suffix, a file that
        is not a PyTorch file / npz or is truncated or damaged, or no ProgSIC parameter at
        all ("no ProgSIC parameters found; top-level keys: ...").
    """
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
            # a tensor of the wrong rank cannot be transposed: a shape mismatch, not a crash
            rank_ok = np.ndim(state[key]) == len(block_shape)
            value = _to_ours(state[key], kind) if rank_ok else np.asarray(state[key])
            if value.shape != block_shape:  # both shapes in the official layout:
                official = _from_ours(np.broadcast_to(np.float32(0), block_shape), kind).shape
                problems.append(
                    f"shape mismatch for {key}: checkpoint {tuple(state[key].shape)}, the "
                    f"config needs {official}"
                )
            values.append(value.astype(np.float32))
            used.add(key)
        complete = len(values) == len(keys) and all(v.shape == block_shape for v in values)
        leaves.append(None if not complete else np.stack(values) if stacked else values[0])
    if not used:  # not one name matches: not a ProgSIC state dict (or an unknown wrapper)
        raise CheckpointImportError(_none_found(source, state))
    extra = sorted(k for k in state if k not in used and not _IGNORED.search(k))
    problems += [f"unexpected key {k} {tuple(state[k].shape)}" for k in extra]
    if "context_model.layer.mask" in state and not problems:
        ours = context_mask(model.latent_channels, model.num_slices).transpose(3, 2, 0, 1)
        if not np.array_equal(state["context_model.layer.mask"], ours):
            problems.append("context_model.layer.mask differs from the mask this config builds")
    if problems:
        summary = _summary(model, state)
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise CheckpointMismatchError(
            f"checkpoint does not match the model config ({len(problems)} problem"
            f"{'s' if len(problems) > 1 else ''}{', ' + summary if summary else ''}): {shown}",
            problems,
        )
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
