"""The codec API's input rules: images are uint8 arrays (or PIL images), files are bytes."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from svi_jax.data.image_io import to_rgb8


def rgb8(image) -> np.ndarray:
    """The codec's input rule (`Codec.compress`): uint8 arrays (or PIL images) only."""
    if not isinstance(image, Image.Image):
        dtype = np.asarray(image).dtype
        if dtype != np.uint8:
            raise TypeError(
                f"the codec takes uint8 (H, W, 3) images with values 0..255, got dtype {dtype}; "
                "convert a [0, 1] float image with (np.clip(x, 0, 1) * 255).round()"
                ".astype(np.uint8)"
            )
    return to_rgb8(image)


def as_bytes(data, function: str) -> bytes:
    """The bytes of a .sic file given to `function`: any object with the buffer protocol
    (bytes, bytearray, memoryview, mmap.mmap, a uint8 numpy array, ...), copied. A path (str or
    os.PathLike) raises TypeError: bytes(path) would give the path's name (then a misleading
    "wrong magic bytes"); so does an object without a buffer (an int would be zeros)."""
    if isinstance(data, str | os.PathLike):
        raise TypeError(
            f"{function} takes the file's bytes, got a path: read it first (Path(p).read_bytes())"
        )
    if isinstance(data, bytes):
        return data
    if isinstance(data, np.ndarray) and data.dtype != np.uint8:  # its raw memory is not the file
        raise TypeError(f"{function} takes the file's bytes, got a {data.dtype} array (not uint8)")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"{function} takes the file's bytes, got {type(data).__name__}") from None
