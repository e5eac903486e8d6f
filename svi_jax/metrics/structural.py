"""SSIM and MS-SSIM for NHWC batches in [0, 1], matching the reference implementations.

Definitions (METRICS.md §5 explains how the references differ; each is reproduced on purpose):

SSIM, `ssim(..., definition=...)`:
  * "valid" (default): scikit-image `structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`; the SSIM map is averaged over the *valid* region only (5 px
    dropped at every border for an 11-tap window). Same definition as pytorch_msssim and
    NeuralCompression. The window is built in float64 and then cast, because SSIM is very
    sensitive to the window not summing to 1 (the error passes through E[x²] − μ²).
  * "torchmetrics": torchmetrics 1.9 — reflect-pad by 5 px, clamp σ² at 0, average the
    *full* H×W map. 1.7e-3 to 7e-3 higher than "valid" on natural images.

MS-SSIM, `ms_ssim(..., variant=...)` (5 scales, window 11, σ 1.5, weights MS_SSIM_WEIGHTS):
  * "neuralcompression" (default): the TF `ssim_multiscale` port in facebookresearch/
    NeuralCompression, which the official ProgSIC code reports. Per channel
    Π_s relu(cs_s)^w_s · relu(ssim_S)^w_S, then the mean over channels. Odd sizes are
    replicate-padded by one row/column at the bottom/right before 2×2 average pooling.
  * "pytorch_msssim": pytorch_msssim 1.0 — same structure, float32 window, odd sizes pooled
    with one zero row/column on *both* sides counted in the average (so the first row of the
    next scale is (0 + x₀)/2). Equal to "neuralcompression" within ~2.5e-6 on even sizes,
    ~1e-3 apart on odd sizes.
  * "torchmetrics": torchmetrics 1.9 — cs over the valid region at scales 1..S−1, the last
    scale's SSIM over the full reflect-padded map, channels and pixels averaged *before* the
    weighted product, floor pooling (drops an odd last row/column), float32 weights.

Size limit: every scale must still hold a full window. For 5 scales and an 11-px window the
minimum side is 161 px ("neuralcompression", "pytorch_msssim") or 176 px ("torchmetrics"),
see `ms_ssim_min_size`. Smaller images raise ValueError at trace time (never an error from
inside a convolution); callers that must score small images can pass fewer `weights`
(scales), which is what the reference implementations allow too, and should say so.

All functions return one value per image, shape (N,), and are jitted (shapes, dtype and the
static options select one compilation).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.metrics.pixelwise import check_image_pair, mean_per_image

Array = jax.Array

# Wang, Simoncelli & Bovik (2003), Table: exponents for scales 1 (finest) .. 5 (coarsest).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_DEFINITIONS = ("valid", "torchmetrics")
MS_SSIM_VARIANTS = ("neuralcompression", "pytorch_msssim", "torchmetrics")


def gaussian_window_1d(win_size: int, sigma: float, dtype: np.dtype | type) -> np.ndarray:
    """Normalised 1-D Gaussian taps in `dtype`, as a reference built in that dtype gets them.

    The reference implementations differ in the precision they build the window in, and the
    difference is visible at the 1e-6 level, so the caller picks it explicitly. Host-side
    numpy: the window is a compile-time constant.
    """
    if win_size <= 0 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    coords = np.arange(win_size, dtype=dtype) - dtype(win_size // 2)
    exponent = -(coords * coords) / dtype(2.0 * sigma * sigma)
    # exp and the sum are evaluated in float64 and rounded once: torch's float32 exp and
    # (vectorised) sum are correctly rounded here, numpy's float32 ones are not, and that
    # one-ulp difference shows up as 2e-5 in pytorch_msssim's per-scale cs terms.
    taps = np.exp(exponent.astype(np.float64)).astype(dtype)
    return (taps / dtype(taps.astype(np.float64).sum())).astype(dtype)


def _window_for(kind: str, win_size: int, sigma: float, dtype: jnp.dtype) -> np.ndarray:
    """The window each reference uses, returned in the input dtype."""
    np_dtype = np.dtype(dtype).type
    if kind == "float64":  # scikit-image (scipy.ndimage builds its taps in float64)
        taps = gaussian_window_1d(win_size, sigma, np.float64)
    elif kind == "float32":  # pytorch_msssim builds its window in float32 whatever the input
        taps = gaussian_window_1d(win_size, sigma, np.float32)
    else:  # "input": NeuralCompression and torchmetrics build it in the input dtype
        taps = gaussian_window_1d(win_size, sigma, np_dtype)
    return taps.astype(np_dtype)


def _depthwise_filter(images: Array, taps: np.ndarray) -> Array:
    """Separable 'valid' Gaussian filtering of every channel of an NHWC batch independently.

    Written as a sum of shifted slices rather than a grouped convolution: XLA fuses it into
    one elementwise loop per direction, which is ~10x faster on CPU than a depthwise conv,
    and plain multiply-adds never drop to TF32 on GPU.
    """
    size = taps.shape[0]
    out_h = images.shape[1] - size + 1
    out_w = images.shape[2] - size + 1
    weights = [jnp.asarray(t, images.dtype) for t in taps]
    rows = weights[0] * images[:, 0:out_h]
    for k in range(1, size):
        rows = rows + weights[k] * images[:, k : k + out_h]
    out = weights[0] * rows[:, :, 0:out_w]
    for k in range(1, size):
        out = out + weights[k] * rows[:, :, k : k + out_w]
    return out


def _ssim_and_cs_maps(
    x: Array, y: Array, taps: np.ndarray, c1: float, c2: float, clamp_variance: bool
) -> tuple[Array, Array]:
    """Per-pixel SSIM and contrast-structure maps (valid region of whatever x, y are)."""
    n = x.shape[0]
    # Filtering the five moments as one stacked batch keeps the compiled graph small.
    moments = _depthwise_filter(jnp.concatenate([x, y, x * x, y * y, x * y], axis=0), taps)
    mu_x, mu_y, e_xx, e_yy, e_xy = (moments[i * n : (i + 1) * n] for i in range(5))
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    if clamp_variance:  # torchmetrics only; E[x²] − μ² can round below 0 on flat regions
        var_x = jnp.maximum(var_x, 0.0)
        var_y = jnp.maximum(var_y, 0.0)
    cs_map = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * cs_map, cs_map


def _reflect_pad(x: Array, pad: int) -> Array:
    """torch `F.pad(mode="reflect")`: mirror without repeating the edge pixel."""
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _channel_means(maps: Array) -> Array:
    """Spatial mean per image and channel: (N, H, W, C) -> (N, C)."""
    return jnp.mean(jnp.mean(maps, axis=2), axis=1)


def _check_window_fits(shape: tuple[int, ...], win_size: int, what: str) -> None:
    if min(shape[1], shape[2]) < win_size:
        raise ValueError(
            f"{what} needs images at least {win_size}x{win_size} px for an {win_size}-px "
            f"window, got {shape[1]}x{shape[2]}"
        )


@functools.partial(
    jax.jit, static_argnames=("data_range", "win_size", "sigma", "k1", "k2", "definition")
)
def ssim(
    x: Array,
    y: Array,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    definition: str = "valid",
) -> Array:
    """Single-scale SSIM per image, averaged over channels; shape (N,).

    `definition="valid"` reproduces `ssim_skimage`, `"torchmetrics"` reproduces
    `ssim_torchmetrics` (see the module docstring for the difference).
    """
    check_image_pair(x, y, "ssim")
    if definition not in SSIM_DEFINITIONS:
        raise ValueError(f"definition must be one of {SSIM_DEFINITIONS}, got {definition!r}")
    logging.info("Tracing ssim(%s) for shape %s %s", definition, x.shape, x.dtype)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    if definition == "valid":
        _check_window_fits(x.shape, win_size, "ssim")
        taps = _window_for("float64", win_size, sigma, x.dtype)
        ssim_map, _ = _ssim_and_cs_maps(x, y, taps, c1, c2, clamp_variance=False)
    else:
        pad = (win_size - 1) // 2
        if min(x.shape[1], x.shape[2]) <= pad:
            raise ValueError(f"ssim needs images larger than {pad} px for reflect padding")
        taps = _window_for("input", win_size, sigma, x.dtype)
        ssim_map, _ = _ssim_and_cs_maps(
            _reflect_pad(x, pad), _reflect_pad(y, pad), taps, c1, c2, clamp_variance=True
        )
    return mean_per_image(ssim_map)


def _halve_size(n: int, variant: str) -> int:
    """Side length after one 2×2 average-pooling step of the given variant."""
    return n // 2 if variant == "torchmetrics" else (n + 1) // 2


def ms_ssim_min_size(
    num_scales: int = len(MS_SSIM_WEIGHTS), win_size: int = 11, variant: str = "neuralcompression"
) -> int:
    """Smallest image side MS-SSIM accepts (161 for 5 scales / 11 px; 176 for torchmetrics)."""
    if variant not in MS_SSIM_VARIANTS:
        raise ValueError(f"variant must be one of {MS_SSIM_VARIANTS}, got {variant!r}")
    n = win_size
    while not _ms_ssim_size_ok(n, num_scales, win_size, variant):
        n += 1
    return n


def _ms_ssim_size_ok(n: int, num_scales: int, win_size: int, variant: str) -> bool:
    if variant == "torchmetrics":
        # torchmetrics' own (stricter, oddly-shaped) precondition, kept so the variant
        # accepts exactly the sizes torchmetrics does.
        if n < 2**num_scales or n // max(1, num_scales - 1) ** 2 <= win_size - 1:
            return False
    for _ in range(num_scales - 1):
        n = _halve_size(n, variant)
    return n >= win_size


def _downsample(x: Array, variant: str) -> Array:
    """2×2 average pooling with each reference's handling of odd sizes."""
    _, h, w, _ = x.shape
    if variant == "neuralcompression":  # replicate one row/column at the bottom/right
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    elif variant == "pytorch_msssim":
        # avg_pool2d(padding=n % 2) pads zeros on both sides and counts them; the trailing
        # pad row/column is never reached, so pad both sides and drop the last one.
        x = jnp.pad(x, ((0, 0), (h % 2, h % 2), (w % 2, w % 2), (0, 0)))
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]  # torchmetrics floors; for the others this is a no-op
    blocks = x.reshape(n, h // 2, 2, w // 2, 2, c)
    return (blocks[:, :, 0, :, 0] + blocks[:, :, 0, :, 1] + blocks[:, :, 1, :, 0]
            + blocks[:, :, 1, :, 1]) / 4.0  # fmt: skip


_MS_SSIM_STATIC = ("data_range", "win_size", "sigma", "k1", "k2", "weights", "variant")


def _ms_ssim_terms(
    x: Array,
    y: Array,
    data_range: float,
    win_size: int,
    sigma: float,
    k1: float,
    k2: float,
    weights: tuple[float, ...],
    variant: str,
) -> Array:
    """Traced body shared by `ms_ssim_terms` and `ms_ssim` (see their docstrings)."""
    check_image_pair(x, y, "ms_ssim")
    if variant not in MS_SSIM_VARIANTS:
        raise ValueError(f"variant must be one of {MS_SSIM_VARIANTS}, got {variant!r}")
    num_scales = len(weights)
    if num_scales < 1:
        raise ValueError("weights must hold at least one scale")
    _, h, w, _ = x.shape
    if not all(_ms_ssim_size_ok(n, num_scales, win_size, variant) for n in (h, w)):
        need = ms_ssim_min_size(num_scales, win_size, variant)
        raise ValueError(
            f"MS-SSIM ({variant}) with {num_scales} scales and a {win_size}-px window needs "
            f"images at least {need}x{need} px, got {h}x{w}. Use larger images, or pass fewer "
            f"`weights` (scales) and report that the metric was changed."
        )
    logging.info("Tracing ms_ssim(%s) for shape %s %s", variant, x.shape, x.dtype)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    taps = _window_for("float32" if variant == "pytorch_msssim" else "input", win_size, sigma,
                       x.dtype)  # fmt: skip
    terms = []
    for scale in range(num_scales):
        if scale > 0:
            x, y = _downsample(x, variant), _downsample(y, variant)
        last = scale == num_scales - 1
        if variant == "torchmetrics":
            if last:  # full-map SSIM of the reflect-padded image, as torchmetrics' ssim
                pad = (win_size - 1) // 2
                ssim_map, _ = _ssim_and_cs_maps(
                    _reflect_pad(x, pad), _reflect_pad(y, pad), taps, c1, c2, True
                )
                value = mean_per_image(ssim_map)
            else:  # cs over the valid region (torchmetrics crops its padded cs map)
                _, cs_map = _ssim_and_cs_maps(x, y, taps, c1, c2, clamp_variance=True)
                value = mean_per_image(cs_map)
            terms.append(jax.nn.relu(value)[:, None])
        else:
            ssim_map, cs_map = _ssim_and_cs_maps(x, y, taps, c1, c2, clamp_variance=False)
            terms.append(jax.nn.relu(_channel_means(ssim_map if last else cs_map)))
    return jnp.stack(terms)


@functools.partial(jax.jit, static_argnames=_MS_SSIM_STATIC)
def _ms_ssim_terms_jit(x, y, data_range, win_size, sigma, k1, k2, weights, variant):
    return _ms_ssim_terms(x, y, data_range, win_size, sigma, k1, k2, weights, variant)


@functools.partial(jax.jit, static_argnames=("weights", "variant"))
def _combine_scales(terms: Array, weights: tuple[float, ...], variant: str) -> Array:
    """Π_s terms_s^w_s, then the mean over channels: (S, N, C') -> (N,)."""
    exponents = np.asarray(weights, np.float64)
    if variant == "torchmetrics":  # torchmetrics keeps its betas in a float32 tensor
        exponents = exponents.astype(np.float32).astype(np.float64)
    exponents = jnp.asarray(exponents, terms.dtype).reshape(-1, 1, 1)
    return jnp.mean(jnp.prod(terms**exponents, axis=0), axis=-1)


def ms_ssim_terms(
    x: Array,
    y: Array,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    variant: str = "neuralcompression",
) -> Array:
    """The per-scale factors MS-SSIM multiplies, before the exponents; shape (S, N, C').

    Rows 0..S-2 are relu(cs_s), row S-1 is relu(ssim_S) (the reference's
    `msssim_scales_*` keys). C' is the channel count, or 1 for "torchmetrics", which
    averages channels before the product.
    """
    weights = tuple(float(v) for v in weights)
    return _ms_ssim_terms_jit(x, y, data_range, win_size, sigma, k1, k2, weights, variant)


def ms_ssim(
    x: Array,
    y: Array,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    variant: str = "neuralcompression",
) -> Array:
    """Multi-scale SSIM per image; shape (N,). Default variant: NeuralCompression (ProgSIC).

    The length of `weights` sets the number of scales. Raises ValueError (at trace time,
    before any convolution) for images below `ms_ssim_min_size(len(weights), win_size,
    variant)`. Jit-compatible: inside a caller's jit, every argument but x, y is static.
    """
    weights = tuple(float(v) for v in weights)
    # Two jitted pieces rather than one, so `ms_ssim` and `ms_ssim_terms` share the
    # expensive compilation; inside a caller's jit both simply inline.
    terms = _ms_ssim_terms_jit(x, y, data_range, win_size, sigma, k1, k2, weights, variant)
    return _combine_scales(terms, weights, variant)
