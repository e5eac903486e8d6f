"""Training and evaluation inputs: a grain loader of random crops, eval images, default photos.

Training batches are float32 (batch, crop, crop, 3) NHWC arrays in [0, 1]:

    from svi_jax.data import loader as data_pipeline

    if __name__ == "__main__":  # needed when num_workers > 0: workers are *spawned* and
        with data_pipeline.make_train_loader(  # re-import the main module
                "data/train", batch_size=16, crop_size=256, seed=0, num_workers=4) as loader:
            batch = next(loader)  # `with` (or close()) stops the workers before exit
            state = loader.get_state()  # bytes; `set_state(state)` on a new loader resumes

* Images (see `image_io` for the 8-bit RGB conversions, EXIF orientation applied) are found
  recursively by extension and sorted, so every host sees the same list. grain shards it:
  host `i` of `n` reads the i-th of n contiguous, equal parts (`grain.sharding.ShardByJaxProcess`
  by default; `shard_index`/`shard_count` give explicit `ShardOptions`); the last `len % n`
  files are dropped so hosts run equal epochs.
* Each host shuffles its files with `seed` (a new order each epoch), takes one random
  crop per image (no flips), repeats for `num_epochs` (None = forever) and batches with
  drop_remainder, so every batch has exactly `batch_size` images. A crop depends only on
  (seed, position in the sample stream): results do not depend on `num_workers`.
* An image smaller than the crop is reflect-padded (split evenly before/after) up to the
  crop size; where a reflection does not fit (a side shorter than half the padding, e.g.
  1-pixel images) symmetric padding is used instead, which repeats edge pixels.
* A file that fails to decode is skipped: the next file of the shard is used in its
  place (the replacement may belong to another host's part), the failure is counted
  (`loader.num_skipped`, `loader.skipped_files`) and a warning naming the file is logged
  once. If no file decodes, `DataError`.
* `get_state()`/`set_state()` give grain's JSON iterator state; `loader.iterator` is the grain
  iterator that `grain.checkpoint.CheckpointSave/CheckpointRestore` save in an orbax
  checkpoint (svi_jax.training.checkpointing). The skip count is not part of it. grain
  refuses a state saved with another data source (by its repr, which names the files
  relative to their common folder: a moved folder still matches) or worker count;
  `seek(batches)` then computes the position an uninterrupted run has after that many
  batches.
* Built-in data (re-exported from `image_io`): `write_skimage_split(root)` writes the
  colour photos bundled with scikit-image as PNGs into root/train and root/val.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from svi_jax.data.image_io import (
    IMAGE_EXTENSIONS,
    SKIMAGE_PHOTOS,
    SKIMAGE_VALIDATION_PHOTOS,
    DataError,
    MissingImageError,
    PathLike,
    eval_images,
    list_images,
    load_image,
    skimage_photos,
    write_skimage_photos,
    write_skimage_split,
)
from svi_jax.data.sources import ImageFileSource, RandomCrop, TfdsImageSource, pad_to_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "MissingImageError",
    "list_images",
    "load_image",
    "ImageFileSource",
    "TrainLoader",
    "make_train_loader",
    "make_tfds_train_loader",
    "pad_to_size",
    "eval_images",
    "SKIMAGE_PHOTOS",
    "SKIMAGE_VALIDATION_PHOTOS",
    "skimage_photos",
    "write_skimage_photos",
    "write_skimage_split",
]

logger = logging.getLogger(__name__)


def _shard_options(
    num_items: int, shard_index: int | None, shard_count: int | None
) -> grain.sharding.ShardOptions:
    """grain's sharding of `num_items` records over hosts: this JAX process's part by default,
    equal parts (drop_remainder) so every host runs the same number of batches per epoch."""
    if shard_index is None and shard_count is None:
        options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    else:
        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
        if shard_count < 1 or not 0 <= shard_index < shard_count:
            raise ValueError(
                f"need 0 <= shard_index < shard_count, got {shard_index}/{shard_count}"
            )
        options = grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=True)
    if num_items < options.shard_count:
        raise DataError(f"{num_items} images cannot be split over {options.shard_count} hosts")
    return options


class TrainLoader(Iterator[np.ndarray]):
    """Iterator of float32 (batch, crop, crop, 3) batches with checkpointable position."""

    def __init__(
        self,
        source: Any,
        *,
        shard_options: grain.sharding.ShardOptions,
        batch_size: int,
        crop_size: int,
        seed: int,
        num_epochs: int | None,
        num_workers: int,
        read_threads: int,
        worker_buffer_size: int,
    ):
        if batch_size < 1 or crop_size < 1:
            raise ValueError(f"batch_size and crop_size must be >= 1: {batch_size}, {crop_size}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32) for grain, got {seed}")
        # grain's drop_remainder split: equal contiguous parts of len // count records.
        self._num_images = len(source) // shard_options.shard_count
        if num_epochs is not None and self._num_images * num_epochs < batch_size:
            raise DataError(
                f"{self._num_images} images x {num_epochs} epochs cannot fill one batch of "
                f"{batch_size}"
            )
        if not flags.FLAGS.is_parsed():  # grain (workers) reads absl flags; allow no app.run
            flags.FLAGS.mark_as_parsed()
        self.source = source
        self.batch_size, self.crop_size = batch_size, crop_size
        self._shard_options, self._num_workers = shard_options, num_workers
        self._skipped: dict[int, str] = {}  # source index -> file, in order of discovery
        sampler = grain.samplers.IndexSampler(
            num_records=len(source),
            shard_options=shard_options,
            shuffle=True,
            num_epochs=num_epochs,
            seed=seed,
        )
        self._loader = grain.DataLoader(
            data_source=source,
            sampler=sampler,
            operations=[RandomCrop(crop_size), grain.transforms.Batch(batch_size, True)],
            worker_count=num_workers,
            worker_buffer_size=worker_buffer_size,
            # The same options as the sampler: the loader then asks it for this host's
            # global indices (shard_index, shard_index + count, ...).
            shard_options=shard_options,
            # Records are full decoded images: keep the read-ahead buffer small.
            read_options=grain.ReadOptions(
                num_threads=read_threads, prefetch_buffer_size=max(2 * read_threads, 1)
            ),
        )
        self._iterator = iter(self._loader)

    @property
    def num_images(self) -> int:
        """Images (records) in this host's shard."""
        return self._num_images

    @property
    def iterator(self):
        """grain's iterator (for `grain.checkpoint.CheckpointSave/CheckpointRestore`)."""
        if self._iterator is None:
            raise ValueError("this TrainLoader is closed")
        return self._iterator

    @property
    def num_skipped(self) -> int:
        """Distinct files skipped so far because they failed to decode."""
        return len(self._skipped)

    @property
    def skipped_files(self) -> tuple[str, ...]:
        return tuple(self._skipped.values())

    def __iter__(self) -> TrainLoader:
        return self

    def __next__(self) -> np.ndarray:
        if self._iterator is None:
            raise ValueError("this TrainLoader is closed")
        batch = next(self._iterator)
        for start, count in zip(batch["skip_start"], batch["skip_count"], strict=True):
            for offset in range(int(count)):
                self._note_skip((int(start) + offset) % len(self.source))
        image = batch["image"]  # from workers: a view of shared memory; copy to release it
        return np.asarray(image) if type(image) is np.ndarray else np.array(image)

    def _note_skip(self, index: int) -> None:
        if index in self._skipped:
            return
        path = self.source.files[index]
        self._skipped[index] = path
        try:  # repeat the decode here, in the main process, to report the reason once
            load_image(path)
            reason = "it decoded on a second attempt (transient read error?)"
        except DataError as error:
            reason = str(error)
        logger.warning(
            "skipping image %s (%d skipped so far): %s", path, len(self._skipped), reason
        )

    def get_state(self) -> bytes:
        """Position in the sample stream (JSON bytes); restore with `set_state`."""
        return self._iterator.get_state()

    def set_state(self, state: bytes) -> None:
        """Continues from `state`; the loader must be built with the same files and seed."""
        self._iterator.set_state(state)

    def seek(self, batches: int) -> None:
        """Puts the iterator where an uninterrupted run is after `batches` batches of this
        loader (its files, seed, shards and workers), whatever state it was in.

        For a resume whose saved position cannot be used (the data source or the worker count
        changed since the checkpoint): the position depends only on the sampler, so it is
        computed. It is written in grain 0.2's DataLoader state layout (the inverse of
        `_DataLoaderStateDatasetIterator.get_state`): per worker, the global index of the last
        record it produced; worker w reads records w, w + W, ... of this shard and batches
        them itself, and batches are taken from the workers in turn, starting at worker 0.
        tests/test_data_pipeline.py checks it against `get_state()` after real batches.
        """
        if batches < 0:
            raise ValueError(f"cannot seek to batch {batches}")
        shard_index = self._shard_options.shard_index
        shard_count = self._shard_options.shard_count
        workers = max(self._num_workers, 1)  # 0 workers: one in-process "worker"
        stride = workers * shard_count  # global records between two of one worker's records
        last_seen = {}
        for worker in range(workers):
            records = len(range(worker, batches, workers)) * self.batch_size  # produced by it
            last_seen[str(worker)] = shard_index - stride + worker * shard_count + records * stride
        state = json.loads(self.get_state())  # grain's own fields (version, sampler, source)
        state["last_seen_indices"] = last_seen
        state["last_worker_index"] = batches % workers - 1 if self._num_workers else -1
        self.set_state(json.dumps(state, indent=4).encode())

    def close(self) -> None:
        """Stops workers and prefetch threads now, not in teardown (noisy with workers)."""
        iterator, self._iterator = self._iterator, None
        inner = getattr(iterator, "_iterator", None)
        if hasattr(inner, "close"):
            inner.close()

    def __enter__(self) -> TrainLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def make_train_loader(
    path: PathLike | Sequence[PathLike],
    *,
    batch_size: int,
    crop_size: int = 256,
    seed: int = 0,
    num_epochs: int | None = None,
    num_workers: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    read_threads: int = 4,
    worker_buffer_size: int = 2,
) -> TrainLoader:
    """Random-crop training batches from an image folder (recursive) or a list of files.

    Args:
      path: folder searched recursively for IMAGE_EXTENSIONS, one image file, or a list
        of image files (used in the given order before sharding).
      batch_size: images per batch on this host.
      crop_size: side of the square crops.
      seed: shuffling and cropping seed, in [0, 2**32).
      num_epochs: passes over the shard; None repeats forever.
      num_workers: grain worker processes; 0 decodes in this process (with
        `read_threads` threads). Workers need an `if __name__ == "__main__":` guard.
      shard_index, shard_count: this host's shard; default jax.process_index() and
        jax.process_count() (multi-host: call jax.distributed.initialize() first).
      read_threads: decoding threads per process.
      worker_buffer_size: batches each worker prepares ahead.

    Raises:
      DataError: no usable image (the message names the path and the extensions), fewer
        images than hosts, or no image of this host's shard decodes.
    """
    if isinstance(path, str | os.PathLike):
        files = list_images(path)
    else:
        files = [Path(p) for p in path]
        if not files:
            raise DataError("make_train_loader got an empty list of image files")
    options = _shard_options(len(files), shard_index, shard_count)
    source = ImageFileSource(files)
    source.check_decodable()
    return TrainLoader(
        source,
        shard_options=options,
        batch_size=batch_size,
        crop_size=crop_size,
        seed=seed,
        num_epochs=num_epochs,
        num_workers=num_workers,
        read_threads=read_threads,
        worker_buffer_size=worker_buffer_size,
    )


def make_tfds_train_loader(
    name: str,
    *,
    split: str = "train",
    data_dir: PathLike | None = None,
    image_key: str = "image",
    batch_size: int,
    crop_size: int = 256,
    seed: int = 0,
    num_epochs: int | None = None,
    num_workers: int = 0,
    shard_index: int | None = None,
    shard_count: int | None = None,
    read_threads: int = 4,
    worker_buffer_size: int = 2,
) -> TrainLoader:
    """Like `make_train_loader`, reading a TFDS dataset already prepared as array_record.

    Uses `tfds.data_source(name, split=split, data_dir=data_dir, download=False)`; no
    TensorFlow is needed to read (images decode with Pillow). Prepare the dataset first,
    e.g. `tfds build div2k --file_format=array_record` (preparing may need TensorFlow).
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "TFDS datasets need tensorflow-datasets: pip install tensorflow-datasets==4.9.10 "
            "(TensorFlow itself is not required to read prepared array_record data)"
        ) from error
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    return TrainLoader(
        TfdsImageSource(source, image_key),
        shard_options=_shard_options(len(source), shard_index, shard_count),
        batch_size=batch_size,
        crop_size=crop_size,
        seed=seed,
        num_epochs=num_epochs,
        num_workers=num_workers,
        read_threads=read_threads,
        worker_buffer_size=worker_buffer_size,
    )
