"""Trace-time checks of what the functional API (`svi_jax.forward`, `svi_jax.objective`) takes.

Everything here reads static properties only (shapes, dtypes) or values that are concrete
(Python / numpy scalars, concrete JAX arrays), so the checks cost nothing at run time and
never add a host callback to a jitted step. A traced level keeps its one compilation for all
levels: only its shape and dtype can be checked, and its value is the caller's contract (the
training schedule, `svi_jax.training.steps.level_at`, keeps it in 1..S).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.integer_checks import level_in_range
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC

IMAGE_LAYOUT = "NHWC float in [0, 1], shape (B, H, W, 3)"

# What an out-of-range *traced* level does (documented in the public docstrings; not checked,
# which would need a host callback inside the training step): the channel mask transmits
# max(0, min(C, W*l)) channels, so l <= 0 samples every channel and l > S transmits all; the
# loss weights extrapolate the MODEL.md §4 formulas; bpp_y_splits_chunk is the rate of slice
# l-1 taken with jnp.take's default out-of-bounds mode (a negative index wraps, an index >= S
# gives NaN). The result is finite nonsense or NaN, never an error.
TRACED_LEVEL_CONTRACT = (
    "A traced level (under jit/vmap/grad) is checked for shape and dtype only: its value must "
    "be in 1..S, which is not checked (that would need a host callback in the step); outside "
    "that range the outputs are finite nonsense or NaN, not an error."
)


def is_traced(value) -> bool:
    """True for a JAX tracer (a value known only inside jit/vmap/grad)."""
    return isinstance(value, jax.core.Tracer)


def check_level(level, num_slices: int) -> None:
    """Raises for a level the model cannot take; a traced level only by shape and dtype.

    level: a scalar integer (Python int, numpy or JAX integer scalar, or a traced int array)
    in 1..num_slices (MODEL.md §1: level l transmits the first l of the S slices).

    Raises:
      TypeError: a bool, a float (7.5 and 7.0 alike: no silent rounding) or a non-numeric level.
      ValueError: a level that is not a scalar (shape (1,) would make the loss (1,)-shaped),
        or a concrete level outside 1..num_slices.
    """
    expected = f"level must be an integer in 1..{num_slices}"
    if isinstance(level, bool | np.bool_):
        raise TypeError(f"{expected}, got {level!r}")
    try:
        dtype = level.dtype if hasattr(level, "dtype") else np.asarray(level).dtype
    except (TypeError, ValueError):
        raise TypeError(f"{expected}, got {type(level).__name__}") from None
    shape = tuple(np.shape(level))
    if shape:
        raise ValueError(f"{expected} (a scalar), got an array of shape {shape}")
    if not jnp.issubdtype(dtype, jnp.integer):
        got = f"a traced {dtype} scalar" if is_traced(level) else f"{level!r} ({dtype})"
        raise TypeError(f"{expected}, got {got}")
    if is_traced(level):
        return  # the value is data: TRACED_LEVEL_CONTRACT
    level_in_range(level, num_slices)  # the codec's rule and words for a concrete level


def check_num_pixels(num_pixels) -> None:
    """Raises ValueError for a concrete pixel count <= 0 (the rate is bits / num_pixels / B);
    TypeError for a non-numeric one. A traced count is the caller's contract."""
    if num_pixels is None or is_traced(num_pixels):
        return
    numeric = np.ndim(num_pixels) == 0 and np.issubdtype(np.asarray(num_pixels).dtype, np.number)
    if isinstance(num_pixels, bool | np.bool_) or not numeric:
        raise TypeError(f"num_pixels must be a positive number, got {num_pixels!r}")
    if not num_pixels > 0:
        raise ValueError(
            f"num_pixels must be positive (the unpadded H*W of the images), got {num_pixels}"
        )


def check_images(x, what: str = "x") -> None:
    """Raises, at trace time, for an image batch the model cannot take: the expected layout
    is `IMAGE_LAYOUT` with H and W multiples of DOWNSCALE_Z (64: z is at 1/64 of the image).

    Only static properties are checked (ndim, shape, dtype; nothing inside jit reads values),
    so a [0, 255] float batch passes: the range is the caller's part of the contract.

    Raises:
      ValueError: ndim != 4 (e.g. an HWC image without its batch axis), 3 != channels
        (NCHW, grayscale), or H, W not multiples of 64 (the message gives the size and
        `svi_jax.pad_to_multiple`).
      TypeError: a non-floating dtype (uint8: divide by 255 first).
    """
    shape, dtype = tuple(x.shape), x.dtype
    if len(shape) != 4:
        raise ValueError(f"{what} must be {IMAGE_LAYOUT}, got shape {shape} ({len(shape)} axes)")
    if shape[-1] != 3:
        hint = " (NCHW? move channels last)" if shape[1] == 3 else ""
        raise ValueError(
            f"{what} must be {IMAGE_LAYOUT}, got {shape[-1]} channels in shape {shape}{hint}"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{what} must be {IMAGE_LAYOUT}, got dtype {dtype}; uint8 images: x / 255.0"
        )
    h, w = shape[1], shape[2]
    if h % DOWNSCALE_Z or w % DOWNSCALE_Z or h < 1 or w < 1:
        raise ValueError(
            f"{what}: image height and width must be multiples of {DOWNSCALE_Z} (z is at "
            f"1/{DOWNSCALE_Z} of the image), got {h}x{w} (H x W); pad with "
            "svi_jax.pad_to_multiple and crop the output (svi_jax.crop_to)"
        )


def latent_shapes(model: ProgressiveSIC, image_shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(y shape, z shape) of an image batch of shape (B, H, W, 3): y is (B, H/16, W/16, C)
    with C = model.latent_channels, z is (B, H/64, W/64, model.hyper_channels).

    Raises ValueError when `image_shape` has not 4 axes or H, W are not multiples of 64."""
    if len(image_shape) != 4:
        raise ValueError(f"image shape must be (B, H, W, 3), got {tuple(image_shape)}")
    b, h, w = image_shape[:3]
    if h % DOWNSCALE_Z or w % DOWNSCALE_Z:
        raise ValueError(
            f"image height and width must be multiples of {DOWNSCALE_Z}, got {h}x{w} (H x W); "
            "use svi_jax.pad_to_multiple"
        )
    y_shape = (b, h // DOWNSCALE_Y, w // DOWNSCALE_Y, model.latent_channels)
    z_shape = (b, h // DOWNSCALE_Z, w // DOWNSCALE_Z, model.hyper_channels)
    return y_shape, z_shape


def _samples_of(rows: int, batch: int) -> str:
    return str(rows // batch) if batch and rows % batch == 0 else f"{rows}/{batch}"


def check_train_noise(model: ProgressiveSIC, x_shape: tuple[int, ...], noise) -> None:
    """Raises ValueError when `noise` (a `TrainNoise`) was not drawn for images of `x_shape`
    with M >= 1 detail samples: y (B, h, w, C), z (B, H/64, W/64, Cz), detail (M*B, h, w, C)
    with h = H/16, w = W/16 (what `draw_train_noise(model, rng, x.shape, M)` gives).
    TypeError (one line) when `noise` is not a TrainNoise (a dict, for one, would iterate over
    its keys and get a misleading shape message; a plain tuple has no .detail)."""
    from svi_jax.forward import TrainNoise  # here: svi_jax.forward imports this module

    y_shape, z_shape = latent_shapes(model, x_shape)
    try:
        if not isinstance(noise, TrainNoise):
            raise TypeError
        ny, nz, nd = (tuple(np.shape(a)) for a in noise)
    except (TypeError, ValueError):
        raise TypeError(
            f"noise must be a TrainNoise (y, z, detail), got {type(noise).__name__}: draw it "
            "with draw_train_noise(model, rng, x.shape, num_samples)"
        ) from None
    b = x_shape[0]
    if ny == y_shape and nz == z_shape and _detail_fits(nd, y_shape):
        return
    if len(ny) == 4 and len(nd) == 4:
        drawn = (
            f"batch {ny[0]} and {ny[1] * DOWNSCALE_Y}x{ny[2] * DOWNSCALE_Y} images with "
            f"M={_samples_of(nd[0], ny[0])} (y {ny}, z {nz}, detail {nd})"
        )
    else:
        drawn = f"y {ny}, z {nz}, detail {nd}"
    raise ValueError(
        f"noise was drawn for {drawn}; x is {tuple(x_shape)}, which needs y {y_shape}, z "
        f"{z_shape} and detail (M*{b}, {', '.join(map(str, y_shape[1:]))}) with M >= 1: draw "
        "it with draw_train_noise(model, rng, x.shape, num_samples)"
    )


def _detail_fits(detail_shape: tuple, y_shape: tuple) -> bool:
    b = y_shape[0]
    return (
        len(detail_shape) == 4
        and detail_shape[1:] == y_shape[1:]
        and detail_shape[0] >= b
        and detail_shape[0] % b == 0
    )


def check_detail_uniform(model: ProgressiveSIC, x_shape: tuple[int, ...], uniform) -> None:
    """Raises ValueError unless `uniform` is (M*B, h, w, C), M >= 1, h = H/16, w = W/16,
    C = model.latent_channels, for images of `x_shape` (B, H, W, 3)."""
    y_shape, _ = latent_shapes(model, x_shape)
    shape = tuple(np.shape(uniform))
    if _detail_fits(shape, y_shape):
        return
    b = y_shape[0]
    raise ValueError(
        f"detail_uniform has shape {shape}; x is {tuple(x_shape)}, which needs (M*B, H/16, "
        f"W/16, C) = (M*{b}, {', '.join(map(str, y_shape[1:]))}) with M >= 1"
    )
