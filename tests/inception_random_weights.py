"""Seeded random weights for pytorch-fid's FID InceptionV3, and the test crops (numpy only).

Shared by tests/test_inception.py (JAX) and tests/data/make_inception_reference.py (run once
with torch + pytorch-fid), so the reference file stores features, not 95 MB of weights.
"""

import json
import pathlib
import zlib

import numpy as np

REFERENCE = pathlib.Path(__file__).resolve().parent / "data" / "inception_reference.npz"

SEED = 20261125
# (scikit-image photo, top, left, height, width): 299² patches (no resize), a 256² patch
# (upsampled, the 256-patch FID), and two others (downsampling; non-square).
CROPS = (
    ("astronaut", 20, 120, 299, 299),
    ("coffee", 60, 200, 299, 299),
    ("chelsea", 10, 100, 256, 256),
    ("rocket", 90, 40, 331, 420),
)


def random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Weights with He-scaled convs and mildly perturbed BatchNorm, one RNG stream per key."""
    out = {}
    for key, shape in shapes.items():
        rng = np.random.default_rng([SEED, zlib.crc32(key.encode())])
        if key.endswith("num_batches_tracked"):
            out[key] = np.zeros(shape, np.int64)
        elif key.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            out[key] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        elif key.endswith("bn.weight"):
            out[key] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif key.endswith("bn.running_var"):
            out[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:  # bn.bias, bn.running_mean, fc.*
            out[key] = rng.normal(0.0, 0.05, shape).astype(np.float32)
    return out


def reference_state_dict() -> dict[str, np.ndarray]:
    """The weights the reference features were made with (key names and shapes from the file)."""
    with np.load(REFERENCE) as ref:
        shapes = {k: tuple(v) for k, v in json.loads(str(ref["keys/json"])).items()}
    return random_state_dict(shapes)


def crop_images() -> list[np.ndarray]:
    """The CROPS as uint8 (H, W, 3) arrays."""
    import skimage.data

    images = []
    for name, top, left, height, width in CROPS:
        photo = getattr(skimage.data, name)()
        images.append(np.ascontiguousarray(photo[top : top + height, left : left + width, :3]))
    return images
