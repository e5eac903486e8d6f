"""Pixel-domain metrics (MSE, PSNR) and the 8-bit rounding every eval metric starts from.

All functions take batch-first NHWC float images in [0, 1] and return one value per image,
shape (N,). Averaging over a test set is the caller's job: a per-image mean of PSNR is not the
PSNR of the mean MSE, and the eval JSON records per-image values.

Reference: METRICS.md §3 `psnr_numpy` = 10·log10(1 / mse) with data range 1, +inf for identical
images (numpy and scikit-image agree bit for bit; torchmetrics is ~1e-6 dB low because it
divides by a float32 ln(10), which we deliberately do not copy).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

Array = jax.Array


def to_uint8_grid(x: Array) -> Array:
    """Snaps float images to the 8-bit grid: round(clip(x, 0, 1) * 255) / 255.

    A codec's output is only an image once it is stored as 8-bit pixels, so every metric is
    computed on this grid (as in the reference values and in c3_neural_compression). The
    result stays floating point (same dtype) so it feeds straight into the other metrics.
    Rounding is half-to-even, like numpy/torch `round`; an exact .5 cannot occur for values
    that came from an 8-bit image, so this is idempotent on `u8 / 255`.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"to_uint8_grid expects floating-point images in [0, 1], got {x.dtype}")
    return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0) / 255.0


def check_image_pair(x: Array, y: Array, name: str) -> None:
    """Raises ValueError unless x and y are same-shape NHWC batches (checked at trace time)."""
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError(f"{name} expects NHWC batches (rank 4), got {x.shape} and {y.shape}")
    if x.shape != y.shape:
        raise ValueError(f"{name} expects images of the same shape, got {x.shape} and {y.shape}")


def mean_per_image(values: Array) -> Array:
    """Mean over all non-batch axes, reduced one axis at a time.

    Summing ~1e5 float32 values in a single reduction loses ~1e-5 relative accuracy on some
    backends; reducing the short axes first keeps every partial sum small, which is what lets
    float32 PSNR/SSIM meet the 1e-5 dB / 5e-5 tolerances of METRICS.md §6.
    """
    while values.ndim > 1:
        values = jnp.mean(values, axis=-1)
    return values


@jax.jit
def mse(x: Array, y: Array) -> Array:
    """Mean squared error per image over all pixels and channels; shape (N,)."""
    check_image_pair(x, y, "mse")
    logging.info("Tracing mse for shape %s %s", x.shape, x.dtype)
    return mean_per_image(jnp.square(x - y))


@functools.partial(jax.jit, static_argnames=("data_range",))
def psnr(x: Array, y: Array, data_range: float = 1.0) -> Array:
    """Peak signal-to-noise ratio in dB per image; shape (N,). +inf where x == y.

    Matches the reference `psnr_numpy` (METRICS.md): 10·log10(data_range² / mse).
    """
    check_image_pair(x, y, "psnr")
    logging.info("Tracing psnr for shape %s %s", x.shape, x.dtype)
    return psnr_from_mse(mean_per_image(jnp.square(x - y)), data_range)


def psnr_from_mse(mse: Array, data_range: float = 1.0) -> Array:
    """PSNR in dB from a mean squared error (any shape, elementwise): 10·log10(range² / mse).

    The one PSNR formula of svi-jax (`psnr` above, the training metrics). +inf for mse = 0.
    """
    mse = jnp.asarray(mse)
    # log10(range²) − log10(mse) rather than log10(range²/mse): identical images give
    # −log10(0) = +inf without a division-by-zero warning path.
    return 10.0 * (2.0 * jnp.log10(jnp.asarray(data_range, mse.dtype)) - jnp.log10(mse))
