"""pytorch-fid's FID InceptionV3 (2048-d pool3 features) in pure JAX, for FID and KID.

Reproduces `pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True,
use_fid_inception=True)` (pytorch-fid 0.3.0), the network behind most published FIDs:
  * input NHWC in [0, 1] -> bilinear resize to 299×299 (PyTorch `align_corners=False`, no
    anti-aliasing, as `F.interpolate`) -> 2x − 1;
  * torchvision's Inception3 trunk (every conv: no bias, BatchNorm with eps 1e-3 on running
    statistics, ReLU) with pytorch-fid's changes to match the TensorFlow FID graph: the
    average pools inside Mixed_5b..7b exclude padding from the count, and Mixed_7c pools
    with a max instead of an average;
  * global average pool -> (N, 2048).

Weights: no Inception weights ship with svi_jax and none can be downloaded here. Point
`load_inception_params` at pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a
`torch.save` file, read without torch by `svi_jax.weights.torch_file`) or at an `.npz` holding the
same state-dict keys. Checked against pytorch-fid itself with seeded random weights
(tests/test_inception.py, reference made by tests/data/make_inception_reference.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svi_jax.weights.torch_file import load_state_dict_file

Array = jax.Array
Params = dict

INPUT_SIZE = 299
FEATURE_DIM = 2048
_BN_EPS = 1e-3

# Inception blocks of the trunk, in order: (module name, block kind). Widths come from the
# weights (pool_features of A, c7 of C).
# Kinds A/C/E1 average-pool without counting padding (pytorch-fid's FIDInceptionA/C/E_1),
# E2 max-pools (FIDInceptionE_2); B and D are torchvision's reduction blocks.
_MIXED = (
    ("Mixed_5b", "A"),
    ("Mixed_5c", "A"),
    ("Mixed_5d", "A"),
    ("Mixed_6a", "B"),
    ("Mixed_6b", "C"),
    ("Mixed_6c", "C"),
    ("Mixed_6d", "C"),
    ("Mixed_6e", "C"),
    ("Mixed_7a", "D"),
    ("Mixed_7b", "E1"),
    ("Mixed_7c", "E2"),
)
_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
# Every BasicConv2d of a block kind, by its torchvision attribute name.
_BLOCK_CONVS = {
    "A": (
        "branch1x1",
        "branch5x5_1",
        "branch5x5_2",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3",
        "branch_pool",
    ),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": (
        "branch1x1",
        *(f"branch7x7_{i}" for i in range(1, 4)),
        *(f"branch7x7dbl_{i}" for i in range(1, 6)),
        "branch_pool",
    ),
    "D": (*(f"branch3x3_{i}" for i in (1, 2)), *(f"branch7x7x3_{i}" for i in range(1, 5))),
    "E": (
        "branch1x1",
        "branch3x3_1",
        "branch3x3_2a",
        "branch3x3_2b",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3a",
        "branch3x3dbl_3b",
        "branch_pool",
    ),
}


class InceptionWeightsError(ValueError):
    """A weights file that is not pytorch-fid's FID Inception."""


def conv_names() -> list[str]:
    """Every BasicConv2d of the trunk, as state-dict prefixes ("Mixed_5b.branch1x1")."""
    names = list(_STEM)
    for block, kind in _MIXED:
        names += [f"{block}.{conv}" for conv in _BLOCK_CONVS[kind[0]]]
    return names


def inception_params_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> Params:
    """{prefix: {"kernel" HWIO, "gamma", "beta", "mean", "var"}} from a PyTorch state dict.

    The classifier (`fc.*`), `num_batches_tracked` and auxiliary-head keys are not used.
    """
    params = {}
    missing = []
    for name in conv_names():
        keys = {
            "kernel": f"{name}.conv.weight",
            "gamma": f"{name}.bn.weight",
            "beta": f"{name}.bn.bias",
            "mean": f"{name}.bn.running_mean",
            "var": f"{name}.bn.running_var",
        }
        missing += [k for k in keys.values() if k not in state_dict]
        if missing:
            continue
        weight = np.asarray(state_dict[keys["kernel"]], np.float32)
        if weight.ndim != 4:
            raise InceptionWeightsError(f"{keys['kernel']}: expected OIHW, got {weight.shape}")
        layer = {"kernel": jnp.asarray(weight.transpose(2, 3, 1, 0))}
        for field in ("gamma", "beta", "mean", "var"):
            value = np.asarray(state_dict[keys[field]], np.float32)
            if value.shape != (weight.shape[0],):
                raise InceptionWeightsError(
                    f"{keys[field]}: expected ({weight.shape[0]},), got {value.shape}"
                )
            layer[field] = jnp.asarray(value)
        params[name] = layer
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InceptionWeightsError(
            f"not pytorch-fid's FID Inception weights: {len(missing)} keys missing ({shown})"
        )
    return params


def load_inception_params(path: str | os.PathLike) -> Params:
    """Params from pytorch-fid's `pt_inception-*.pth` (read without torch) or an .npz."""
    params = inception_params_from_state_dict(load_state_dict_file(path))
    if params["Mixed_7c.branch_pool"]["kernel"].shape[2:] != (2048, 192):
        raise InceptionWeightsError(f"{path}: Mixed_7c has the wrong shape for InceptionV3")
    return params


def bilinear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of PyTorch's bilinear interpolation with align_corners=False.

    Source coordinate (i + ½)·in/out − ½, clamped at 0; the upper neighbour is clamped at
    the last pixel. No anti-aliasing, so downscaling samples like F.interpolate does.
    """
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), hi), frac)
    return matrix.astype(np.float32)


def _resize_to_input(x: Array) -> Array:
    height, width = x.shape[1:3]
    if (height, width) == (INPUT_SIZE, INPUT_SIZE):
        return x  # F.interpolate to the same size is the identity
    rows = jnp.asarray(bilinear_resize_matrix(height, INPUT_SIZE))
    cols = jnp.asarray(bilinear_resize_matrix(width, INPUT_SIZE))
    x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=lax.Precision.HIGHEST)
    return jnp.einsum("pw,nowc->nopc", cols, x, precision=lax.Precision.HIGHEST)


def _basic_conv(params: Params, name: str, x: Array, stride: int = 1, same: bool = True) -> Array:
    """conv (no bias) -> BatchNorm (running statistics, eps 1e-3) -> ReLU."""
    layer = params[name]
    kh, kw = layer["kernel"].shape[:2]
    padding = ((kh // 2, kh // 2), (kw // 2, kw // 2)) if same else ((0, 0), (0, 0))
    # HIGHEST: XLA on GPU may otherwise run float32 convolutions in TF32.
    y = lax.conv_general_dilated(
        x,
        layer["kernel"],
        window_strides=(stride, stride),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    y = (y - layer["mean"]) / jnp.sqrt(layer["var"] + _BN_EPS) * layer["gamma"] + layer["beta"]
    return jax.nn.relu(y)


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
    pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)


def _avg_pool_exclude_padding(x: Array) -> Array:
    """3×3, stride 1, padding 1, `count_include_pad=False`: border means over real pixels."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, pads)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = lax.reduce_window(ones, 0.0, lax.add, window, strides, pads)
    return total / count


def _block(params: Params, name: str, kind: str, x: Array) -> Array:
    def conv(branch, h, **kw):
        return _basic_conv(params, f"{name}.{branch}", h, **kw)

    if kind == "A":  # 35×35: 1×1 | 5×5 | double 3×3 | pool
        b5 = conv("branch5x5_2", conv("branch5x5_1", x))
        b3 = conv("branch3x3dbl_1", x)
        b3 = conv("branch3x3dbl_3", conv("branch3x3dbl_2", b3))
        pool = conv("branch_pool", _avg_pool_exclude_padding(x))
        return jnp.concatenate([conv("branch1x1", x), b5, b3, pool], axis=-1)
    if kind == "B":  # 35 -> 17 reduction
        b3 = conv("branch3x3", x, stride=2, same=False)
        bd = conv("branch3x3dbl_2", conv("branch3x3dbl_1", x))
        bd = conv("branch3x3dbl_3", bd, stride=2, same=False)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)
    if kind == "C":  # 17×17: factorised 7×7 convolutions
        b7 = x
        for i in range(1, 4):
            b7 = conv(f"branch7x7_{i}", b7)
        bd = x
        for i in range(1, 6):
            bd = conv(f"branch7x7dbl_{i}", bd)
        pool = conv("branch_pool", _avg_pool_exclude_padding(x))
        return jnp.concatenate([conv("branch1x1", x), b7, bd, pool], axis=-1)
    if kind == "D":  # 17 -> 8 reduction
        b3 = conv("branch3x3_2", conv("branch3x3_1", x), stride=2, same=False)
        b7 = x
        for i in range(1, 4):
            b7 = conv(f"branch7x7x3_{i}", b7)
        b7 = conv("branch7x7x3_4", b7, stride=2, same=False)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)
    # E1 / E2, 8×8: split 1×3 and 3×1 branches
    b3 = conv("branch3x3_1", x)
    b3 = jnp.concatenate([conv("branch3x3_2a", b3), conv("branch3x3_2b", b3)], axis=-1)
    bd = conv("branch3x3dbl_2", conv("branch3x3dbl_1", x))
    bd = jnp.concatenate([conv("branch3x3dbl_3a", bd), conv("branch3x3dbl_3b", bd)], axis=-1)
    pooled = _avg_pool_exclude_padding(x) if kind == "E1" else _max_pool(x, 1, pad=1)
    return jnp.concatenate([conv("branch1x1", x), b3, bd, conv("branch_pool", pooled)], axis=-1)


def inception_blocks(params: Params, images: Array) -> list[Array]:
    """The outputs of pytorch-fid's four blocks (64, 192, 768, 2048 channels; the last one
    pooled to 1×1) for NHWC images in [0, 1] of any size."""
    x = _resize_to_input(images.astype(jnp.float32)) * 2.0 - 1.0
    x = _basic_conv(params, "Conv2d_1a_3x3", x, stride=2, same=False)
    x = _basic_conv(params, "Conv2d_2a_3x3", x, same=False)
    x = _max_pool(_basic_conv(params, "Conv2d_2b_3x3", x), 2)
    outputs = [x]
    x = _basic_conv(params, "Conv2d_3b_1x1", x)
    x = _max_pool(_basic_conv(params, "Conv2d_4a_3x3", x, same=False), 2)
    outputs.append(x)
    for name, kind in _MIXED:
        x = _block(params, name, kind, x)
        if name == "Mixed_6e":
            outputs.append(x)
    outputs.append(jnp.mean(x, axis=(1, 2), keepdims=True))
    return outputs


@jax.jit
def inception_features(params: Params, images: Array) -> Array:
    """(N, 2048) pool3 features of NHWC images in [0, 1] (pytorch-fid's FID activations)."""
    return inception_blocks(params, images)[-1][:, 0, 0, :]


def make_feature_fn(params: Params, batch_multiple: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    """A `feature_fn` for `svi_jax.metrics.fid_kid`: uint8 NHWC patches -> (N, 2048) numpy.

    Batches are zero-padded to a multiple of `batch_multiple`, so the varying tail batches
    of an evaluation reuse a few compiled shapes instead of compiling one per size.
    """

    def feature_fn(patches: np.ndarray) -> np.ndarray:
        n = len(patches)
        padded = np.zeros((-(-n // batch_multiple) * batch_multiple, *patches.shape[1:]), np.uint8)
        padded[:n] = patches
        x = jnp.asarray(padded, jnp.float32) / 255.0
        return np.asarray(inception_features(params, x))[:n]

    return feature_fn
