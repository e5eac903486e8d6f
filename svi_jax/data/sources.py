"""grain's random-access record sources and per-record crop of the training loader
(svi_jax.data.loader builds the pipeline from them).

* `ImageFileSource`: record i is image file i decoded to uint8 RGB (the next decodable file
  in its place when it fails); its repr, which grain saves with an iterator state and compares
  on restore, names the files relative to their common folder.
* `TfdsImageSource`: the RGB image of each record of a TFDS `data_source`.
* `pad_to_size` / `RandomCrop`: small images padded up to the crop (reflect, or symmetric
  where a reflection does not fit), one uniformly random crop, float32 in [0, 1].
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from svi_jax.data.image_io import DataError, PathLike, load_image, to_rgb8


class ImageFileSource:
    """grain random-access source: record i is the decoded image file i (uint8 HWC RGB).

    Records are dicts {"image", "skip_start", "skip_count"}: when file i does not decode,
    files i+1, i+2, ... (cyclically) are tried and the record says which ones failed.
    """

    def __init__(self, files: Sequence[PathLike]):
        self.files = tuple(str(f) for f in files)
        if not self.files:
            raise DataError("ImageFileSource needs at least one file")
        self._bad: set[int] = set()  # per process: files known not to decode

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        """grain saves it with an iterator state and compares it on restore. It names the
        files relative to their common folder, so a moved or copied data folder (or workdir
        holding it) still restores the saved position."""
        files = [os.path.abspath(f) for f in self.files]
        root = os.path.commonpath([os.path.dirname(f) for f in files])
        names = "\n".join(Path(os.path.relpath(f, root)).as_posix() for f in files)
        digest = hashlib.sha1(names.encode()).hexdigest()[:12]
        return f"ImageFileSource(num_files={len(self.files)}, relative_sha1={digest})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        count = len(self.files)
        for offset in range(count):
            position = (index + offset) % count
            if position in self._bad:
                continue
            try:
                image = load_image(self.files[position])
            except DataError:
                self._bad.add(position)
                continue
            return {"image": image, "skip_start": index % count, "skip_count": offset}
        raise DataError(f"none of the {count} images in this shard decodes, e.g. {self.files[0]}")

    def check_decodable(self) -> None:
        """Raises DataError unless at least one file decodes (usually decodes just one)."""
        first_error = None
        for path in self.files:
            try:
                load_image(path)
                return
            except DataError as error:
                first_error = first_error or error
        raise DataError(f"all {len(self.files)} image files failed to decode, e.g. {first_error}")


class TfdsImageSource:
    """The RGB image of each record of a TFDS data source (grain's sampler shards it)."""

    def __init__(self, source: Sequence[Any], image_key: str):
        self.source, self.image_key = source, image_key

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:  # grain compares it when restoring an iterator state
        return f"TfdsImageSource({self.source!r}, n={len(self.source)})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = to_rgb8(self.source[index][self.image_key])
        return {"image": image, "skip_start": 0, "skip_count": 0}


def pad_to_size(image: np.ndarray, size: int) -> np.ndarray:
    """Pads an HWC image so both sides are >= size: reflect, or symmetric if that cannot."""
    height, width = image.shape[:2]
    pads = []
    for side in (height, width):
        total = max(size - side, 0)
        pads.append((total // 2, total - total // 2))
    if not any(before or after for before, after in pads):
        return image
    fits = all(max(pad) <= side - 1 for pad, side in zip(pads, (height, width), strict=True))
    return np.pad(image, [*pads, (0, 0)], mode="reflect" if fits else "symmetric")


class RandomCrop(grain.transforms.RandomMap):
    """Pads small images, takes one uniformly random crop, scales to float32 [0, 1]."""

    def __init__(self, crop_size: int):
        self.crop_size = crop_size

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = pad_to_size(record["image"], self.crop_size)
        top = int(rng.integers(0, image.shape[0] - self.crop_size + 1))
        left = int(rng.integers(0, image.shape[1] - self.crop_size + 1))
        crop = image[top : top + self.crop_size, left : left + self.crop_size]
        return {
            "image": crop.astype(np.float32) / np.float32(255.0),
            "skip_start": np.int32(record["skip_start"]),
            "skip_count": np.int32(record["skip_count"]),
        }
