"""Image-quality metrics for evaluation, each matched to a reference implementation.

Conventions: images are batch-first NHWC floats in [0, 1]; per-image metrics return shape
(N,); round codec outputs with `to_uint8_grid` first (all reported numbers are on 8-bit
images). FID/KID are dataset-level and run on the host in numpy.

Reference values and tolerances: shared/reference/METRICS.md (tests/test_metrics.py).
LPIPS lives in `svi_jax.metrics.lpips` (it doubles as a training loss).
"""

from svi_jax.metrics.dists import (
    DISTS_MIN_SIZE,
    dists_distance,
    dists_features,
    dists_from_features,
    l2_pool,
    load_dists_params,
)
from svi_jax.metrics.fid_kid import (
    extract_patches,
    feature_statistics,
    fid_from_features,
    fid_kid_from_images,
    frechet_distance,
    kid_from_features,
    kid_subset_indices,
    patch_features,
    polynomial_mmd2_unbiased,
)
from svi_jax.metrics.pixelwise import mse, psnr, to_uint8_grid
from svi_jax.metrics.structural import (
    MS_SSIM_VARIANTS,
    MS_SSIM_WEIGHTS,
    SSIM_DEFINITIONS,
    ms_ssim,
    ms_ssim_min_size,
    ms_ssim_terms,
    ssim,
)

__all__ = [
    "DISTS_MIN_SIZE",
    "MS_SSIM_VARIANTS",
    "MS_SSIM_WEIGHTS",
    "SSIM_DEFINITIONS",
    "dists_distance",
    "dists_features",
    "dists_from_features",
    "extract_patches",
    "feature_statistics",
    "fid_from_features",
    "fid_kid_from_images",
    "frechet_distance",
    "kid_from_features",
    "kid_subset_indices",
    "l2_pool",
    "load_dists_params",
    "ms_ssim",
    "ms_ssim_min_size",
    "ms_ssim_terms",
    "mse",
    "patch_features",
    "polynomial_mmd2_unbiased",
    "psnr",
    "ssim",
    "to_uint8_grid",
]
