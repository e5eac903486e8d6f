"""FID and KID from Inception features, and the HiFiC/MS-ILLM patch protocol (host-side numpy).

These are dataset-level statistics over thousands of 2048-d vectors: they run once per eval on
the host in float64, outside jit, where scipy/numpy linear algebra is exact and cheap.

Definitions (METRICS.md §3):
  * FID = ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa Σb)^½ with ddof = 1 covariances. The reference
    is pytorch-fid (`scipy.linalg.sqrtm`); the default here uses tr (Σa Σb)^½ =
    Σ Re √eig(Σa Σb) (torch-fidelity), which agrees to ~1e-13 and never fails to converge.
  * KID = mean ± population std (ddof 0) of the unbiased polynomial-kernel MMD² over random
    subsets, k(u, v) = (u·v / d + 1)³, torch-fidelity's subset scheme
    (`np.random.RandomState(seed)`, then for each subset `choice(n_a, m)` followed by
    `choice(n_b, m)`, without replacement). MODEL.md §6 asks for 100 subsets of 500; the subset
    size is clipped to the number of available features.
  * Patches (MODEL.md §6, HiFiC "FID/256"): every image is cut into a non-overlapping grid of
    p×p patches, then, if both sides are ≥ 1.5·p, again after dropping p//2 rows and columns
    at the top-left (the half-patch-shifted grid, as NeuralCompression's `update_patch_fid`).

The feature network is a parameter: any `feature_fn(uint8 NHWC batch) -> (N, D)` callable.
`svi_jax.metrics.inception.make_feature_fn` gives pytorch-fid's FID InceptionV3 (it resizes
each patch to 299×299 itself, as pytorch-fid does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.linalg

FeatureFn = Callable[[np.ndarray], np.ndarray]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased (ddof = 1) covariance of (N, D) features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need an (N >= 2, D) feature matrix, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray, method: str) -> float:
    """tr (Σa Σb)^½ for symmetric PSD Σa, Σb."""
    product = sigma_a @ sigma_b
    if method == "eigvals":
        # Σa Σb is similar to the PSD matrix Σa^½ Σb Σa^½, so its eigenvalues are real and
        # ≥ 0 up to rounding; the complex square root absorbs tiny negative/imaginary parts.
        eigenvalues = np.linalg.eigvals(product).astype(np.complex128)
        return float(np.sqrt(eigenvalues).real.sum())
    if method == "sqrtm":  # pytorch-fid, including its fallback for singular products
        root = scipy.linalg.sqrtm(product)
        if not np.isfinite(root).all():
            offset = np.eye(sigma_a.shape[0]) * 1e-6
            root = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
        return float(np.trace(root).real)
    raise ValueError(f"method must be 'eigvals' or 'sqrtm', got {method!r}")


def frechet_distance(
    mu_a: np.ndarray,
    sigma_a: np.ndarray,
    mu_b: np.ndarray,
    sigma_b: np.ndarray,
    method: str = "eigvals",
) -> float:
    """Fréchet distance between N(μa, Σa) and N(μb, Σb) (the FID formula)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError("the two Gaussians must have the same dimension")
    diff = mu_a - mu_b
    tr_covmean = _trace_sqrt_product(sigma_a, sigma_b, method)
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean)


def fid_from_features(
    features_a: np.ndarray, features_b: np.ndarray, method: str = "eigvals"
) -> float:
    """FID between two (N, D) feature sets."""
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b, method)


def polynomial_mmd2_unbiased(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Unbiased MMD² with the KID kernel k(u, v) = (u·v / d + 1)³; equal subset sizes m.

    MMD² = [Σ_{i≠j} k(a_i, a_j) + Σ_{i≠j} k(b_i, b_j)] / (m(m−1)) − 2 Σ_{i,j} k(a_i, b_j) / m².
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"need two (m >= 2, D) subsets of equal shape, got {a.shape}, {b.shape}")
    m, d = a.shape
    k_aa = (a @ a.T / d + 1.0) ** 3
    k_bb = (b @ b.T / d + 1.0) ** 3
    k_ab = (a @ b.T / d + 1.0) ** 3
    within = (k_aa.sum() - np.trace(k_aa)) + (k_bb.sum() - np.trace(k_bb))
    return float(within / (m * (m - 1)) - 2.0 * k_ab.sum() / (m * m))


def kid_subset_indices(
    num_a: int, num_b: int, num_subsets: int = 100, subset_size: int = 500, seed: int = 2020
) -> tuple[np.ndarray, np.ndarray]:
    """torch-fidelity's KID subsets: (num_subsets, m) index arrays into a and b.

    Uses numpy's legacy RandomState on purpose: its stream is frozen by numpy's stability
    policy, so the same seed gives torch-fidelity's subsets (2020 is its default seed).
    `subset_size` is clipped to min(num_a, num_b).
    """
    m = min(subset_size, num_a, num_b)
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {num_a} and {num_b}")
    rng = np.random.RandomState(seed)
    idx_a = np.empty((num_subsets, m), np.int64)
    idx_b = np.empty((num_subsets, m), np.int64)
    for s in range(num_subsets):
        idx_a[s] = rng.choice(num_a, m, replace=False)
        idx_b[s] = rng.choice(num_b, m, replace=False)
    return idx_a, idx_b


def kid_from_features(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 500,
    seed: int = 2020,
) -> tuple[float, float, np.ndarray]:
    """KID mean, population std (ddof 0) and the (num_subsets,) per-subset MMD² values."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    idx_a, idx_b = kid_subset_indices(len(a), len(b), num_subsets, subset_size, seed)
    pairs = zip(idx_a, idx_b, strict=True)
    mmd2 = np.array([polynomial_mmd2_unbiased(a[i], b[j]) for i, j in pairs])
    return float(mmd2.mean()), float(mmd2.std()), mmd2


def extract_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
    """HiFiC/MS-ILLM patches of one (H, W, C) image: (P, p, p, C), row-major order.

    Non-overlapping grid from the top-left corner; then, when H and W are both ≥ 1.5·p, the
    grid again on the image shifted by p//2 in both directions. Leftover borders are dropped.
    """
    if image.ndim != 3:
        raise ValueError(f"expected one (H, W, C) image, got shape {image.shape}")

    def grid(img: np.ndarray) -> list[np.ndarray]:
        rows, cols = img.shape[0] // patch_size, img.shape[1] // patch_size
        return [
            img[r * patch_size : (r + 1) * patch_size, c * patch_size : (c + 1) * patch_size]
            for r in range(rows)
            for c in range(cols)
        ]

    patches = grid(image)
    height, width = image.shape[:2]
    if height >= 1.5 * patch_size and width >= 1.5 * patch_size:
        half = patch_size // 2
        patches += grid(image[half:, half:])
    if not patches:
        return np.zeros((0, patch_size, patch_size, image.shape[2]), image.dtype)
    return np.stack(patches)


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with round-half-to-even (as `to_uint8_grid`); uint8 passes."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def patch_features(
    images: Iterable[np.ndarray], feature_fn: FeatureFn, patch_size: int = 299, batch_size: int = 64
) -> np.ndarray:
    """Features of all patches of all images: (total patches, D) float64.

    `images` yields (H, W, 3) arrays, float in [0, 1] or uint8, of any sizes;
    `feature_fn` receives uint8 NHWC batches of p×p patches.
    """
    features: list[np.ndarray] = []
    pending = np.zeros((0,), np.uint8)
    for image in images:
        patches = extract_patches(_to_uint8(image), patch_size)
        pending = patches if pending.size == 0 else np.concatenate([pending, patches])
        # Fixed-size batches: a jitted feature_fn then compiles once (plus one tail batch).
        while len(pending) >= batch_size:
            features.append(np.asarray(feature_fn(pending[:batch_size]), np.float64))
            pending = pending[batch_size:]
    if len(pending):
        features.append(np.asarray(feature_fn(pending), np.float64))
    if not features:
        raise ValueError(f"no {patch_size}x{patch_size} patches: images are too small")
    return np.concatenate(features)


def fid_kid_from_images(
    reference_images: Sequence[np.ndarray],
    reconstructed_images: Sequence[np.ndarray],
    feature_fn: FeatureFn,
    patch_size: int = 299,
    kid_subsets: int = 100,
    kid_subset_size: int = 500,
    seed: int = 2020,
) -> dict[str, float]:
    """Patch FID and KID between originals and reconstructions (MODEL.md §6).

    Returns {"fid", "kid_mean", "kid_std", "num_patches"}.
    """
    real = patch_features(reference_images, feature_fn, patch_size)
    fake = patch_features(reconstructed_images, feature_fn, patch_size)
    kid_mean, kid_std, _ = kid_from_features(real, fake, kid_subsets, kid_subset_size, seed)
    return {
        "fid": fid_from_features(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "num_patches": float(len(real)),
    }
