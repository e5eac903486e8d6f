"""Checks of every input of a training run, before the first step and before any write.

`check_run(config, workdir)` is called first thing by `train_and_evaluate`. It reads, and
never writes: a run it refuses leaves the workdir exactly as it was. Each failure is one
`PreflightError` line naming the file or flag and what to do:

* flags: batch size (>= 1, and a multiple of the device count: the global batch is split
  evenly over the devices; never changed silently), crop size (a positive multiple of 64:
  the model's total downscaling), validation crop, step counts, checkpoints kept, seed, phase;
* data: the training folder holds images: every header is read and every image decoded
  (above TRAIN_DECODE_LIMIT files, an evenly spread sample of that many is decoded, and an
  info line says so); the files that fail are listed in one warning (the loader skips them);
  images smaller than the crop, which the loader reflect-pads, are counted in one info line;
  files with an image extension svi_jax does not read are named in one warning line; a folder
  where every file fails (or every file of the decoded sample) is an error. Every validation
  image decodes (any size >= 1 px: validation pads them as the codec does,
  svi_jax.forward.pad_to_multiple); those that do not are named in one error line (the first
  MAX_LISTED_FILES of svi_jax.data.checks, then a count);
* the previous phase's export (`train.init_from`) loads, has this config's model, and is not
  this run's own export (which the run would overwrite);
* the workdir: not a file; checkpoints in it were written with this model and phase;
  no training or validation folder inside its output folders, nor the workdir inside them
  (the run's PNG grids would become training images).
"""

from __future__ import annotations

import json
import logging
import pathlib

import jax
import ml_collections
from PIL import Image

from svi_jax.data.checks import (
    MAX_LISTED_FILES,
    bad_images_text,
    find_bad_images,
    skipped_images_line,
)
from svi_jax.data.image_io import DataError, list_images
from svi_jax.nn.model import DOWNSCALE_Z
from svi_jax.safety import is_within, one_line
from svi_jax.weights.export import EXECUTION_ONLY_FIELDS, ExportError, load_exported_model

logger = logging.getLogger(__name__)
OUTPUT_FOLDERS = ("checkpoints", "export", "images", "tensorboard")  # what a run writes
_REPORTED: set[tuple[str, int | str | None]] = set()  # (folder, crop or "val"): notes logged
# Training images decoded in full by the preflight (all headers are read): above it an evenly
# spread sample, so a large dataset (ImageNet: 1.3M files) does not spend minutes decoding
# before the first step; the loader still skips, and names, any other file that fails.
TRAIN_DECODE_LIMIT = 200


class PreflightError(DataError):
    """An input of a training run (data, flag, checkpoint) that cannot be used; the message
    names it. A `DataError`, so callers that catch data errors catch these too."""


def model_config_diff(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
    """Model-config fields that differ (execution-only fields such as remat excluded)."""
    da, db = dict(a.model.to_dict()), dict(b.model.to_dict())
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v  # JSON turns tuples to lists
    keys = (set(da) | set(db)) - EXECUTION_ONLY_FIELDS
    return sorted(k for k in keys if norm(da.get(k)) != norm(db.get(k)))


def check_flags(config: ml_collections.ConfigDict) -> None:
    d, t = config.data, config.train
    crop = int(d.crop_size)
    problems = []
    batch, devices = int(d.batch_size), jax.device_count()
    if batch < 1:
        problems.append(f"--config.data.batch_size={d.batch_size} must be >= 1")
    elif batch % devices:  # each device takes batch / devices images of every step
        multiples = sorted(
            {m for m in (batch // devices * devices, -(-batch // devices) * devices) if m}
        )
        problems.append(
            f"--config.data.batch_size={batch} (the global batch) must be a multiple of the "
            f"{devices} devices (jax.device_count()): e.g. "
            + " or ".join(f"--config.data.batch_size={m}" for m in multiples)
        )
    if crop < DOWNSCALE_Z or crop % DOWNSCALE_Z:
        problems.append(
            f"--config.data.crop_size={crop} must be a positive multiple of {DOWNSCALE_Z} "
            "(the model downscales by 64)"
        )
    if int(d.val_crop) < 0:
        problems.append(f"--config.data.val_crop={d.val_crop} must be >= 0 (0: whole image)")
    if int(t.num_steps) < 0:
        problems.append(f"--config.train.num_steps={t.num_steps} must be >= 0")
    if int(t.keep_checkpoints) < 1:
        problems.append(f"--config.train.keep_checkpoints={t.keep_checkpoints} must be >= 1")
    if not 0 <= int(config.seed) < 2**32:
        problems.append(f"--config.seed={config.seed} must be in [0, 2**32)")
    if config.phase not in ("warming", "main", "gan"):
        problems.append(
            f"--config.phase={config.phase} must be warming, main or gan, or a comma-separated "
            "sequence of them (e.g. warming,main)"
        )
    if problems:
        raise PreflightError("; ".join(problems))


def _one_line_list(bad, limit: int = 3) -> str:
    shown = "; ".join(f"{file}: {reason}" for file, reason in bad[:limit])
    return shown + (f"; and {len(bad) - limit} more" if len(bad) > limit else "")


def check_training_images(path: str, crop_size: int | None = None) -> None:
    """The folder holds images. Every header is read; every image (up to TRAIN_DECODE_LIMIT,
    else an evenly spread sample of that many, said in an info line) is decoded, so a
    truncated file is named now, not mid-run. The files that fail are listed in one warning
    (the loader skips them). With `crop_size`, images with a side below it (the loader
    reflect-pads them up to the crop, svi_jax.data.loader.pad_to_size) are counted in one
    info line.

    Raises:
      PreflightError: no image file, none of them reads, or (above TRAIN_DECODE_LIMIT) every
        file of the decoded sample fails.
    """
    reported = (str(pathlib.Path(path).resolve()), crop_size)
    if reported in _REPORTED:
        return  # checked (and its notes logged) by an earlier phase of this run: not decoded again
    skipped: list[str] = []
    try:
        files = list_images(path, skipped)
    except DataError as error:
        raise PreflightError(f"training data (--config.data.train): {error}") from None
    bad, small, readable = [], [], []
    for file in files:
        try:
            with Image.open(file) as image:
                width, height = image.size  # the shorter side is the same after EXIF turns
            if crop_size and min(width, height) < crop_size:
                small.append(f"{file} ({width}x{height})")
            readable.append(file)
        except Exception as error:  # Pillow raises many types for foreign bytes
            bad.append((file, one_line(error)))
    sampled = len(readable) > TRAIN_DECODE_LIMIT
    if sampled:  # evenly spread over the sorted list (every folder of a tree gets its share)
        step = len(readable) / TRAIN_DECODE_LIMIT
        readable = [readable[int(i * step)] for i in range(TRAIN_DECODE_LIMIT)]
    undecodable = find_bad_images(readable)
    bad += undecodable
    if len(bad) == len(files):
        raise PreflightError(
            f"no training image in {path} can be read ({len(files)} files): "
            f"{_one_line_list(bad)}; check the folder"
        )
    if sampled and len(undecodable) == len(readable):  # the sample says: (almost) none decode
        raise PreflightError(
            f"no training image in {path} can be read: {len(undecodable)} of the "
            f"{len(readable)} decoded (a sample of {len(files)} files) fail: "
            f"{_one_line_list(undecodable)}; check the folder"
        )
    _REPORTED.add(reported)
    line = skipped_images_line(path, skipped)
    if line:
        logger.warning("%s", line)
    if sampled:
        logger.info(
            "training data: read the headers of all %d images and decoded a sample of %d "
            "(--config.data.train holds more than %d); the loader skips, and names, any other "
            "file that fails to decode",
            len(files),
            TRAIN_DECODE_LIMIT,
            TRAIN_DECODE_LIMIT,
        )
    if bad:
        logger.warning(
            "%s\nthese files will be skipped (fix or remove them)",
            bad_images_text(
                bad,
                len(files),
                f"the training data {path}"
                + (
                    f" (all headers read, a sample of {TRAIN_DECODE_LIMIT} decoded)"
                    if sampled
                    else ""
                ),
            ),
        )
    if small:
        logger.info(
            "%d of %d training images are smaller than the %d-px crop "
            "(--config.data.crop_size) on a side and are reflect-padded up to it, e.g. %s",
            len(small),
            len(files),
            crop_size,
            small[0],
        )


def check_validation_images(path: str) -> None:
    """Every validation image decodes (they are all used at every validation); those that do
    not are named in one error line (the first MAX_LISTED_FILES, then a count of the rest)."""
    skipped: list[str] = []
    try:
        files = list_images(path, skipped)
    except DataError as error:
        raise PreflightError(f"validation data (--config.data.val): {error}") from None
    bad = find_bad_images(files)
    if bad:
        raise PreflightError(
            f"{len(bad)} of {len(files)} validation images (--config.data.val) cannot be used: "
            f"{_one_line_list(bad, MAX_LISTED_FILES)}; fix or remove them"
        )
    line = skipped_images_line(path, skipped)
    if line and (str(pathlib.Path(path).resolve()), "val") not in _REPORTED:
        _REPORTED.add((str(pathlib.Path(path).resolve()), "val"))
        logger.warning("%s", line)


def check_init_from(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    source = config.train.init_from
    if not source:
        return
    if is_within(source, workdir / "export") or pathlib.Path(source).resolve() == workdir:
        raise PreflightError(
            f"--config.train.init_from={source} is this run's own export, which the run "
            "overwrites: give each phase its own --workdir"
        )
    try:
        previous, _, _ = load_exported_model(source)
    except ExportError as error:
        raise PreflightError(f"--config.train.init_from={source}: {error}") from None
    diff = model_config_diff(previous, config)
    if diff:
        raise PreflightError(
            f"--config.train.init_from={source} holds another model (differs in: "
            f"{', '.join(diff)}); start from an export of this config"
        )


def check_workdir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise PreflightError(f"--workdir {workdir} is a file, not a folder")
    saved = workdir / "checkpoints" / "config.json"
    if saved.is_file():
        try:
            previous = ml_collections.ConfigDict(json.loads(saved.read_text()))
        except (OSError, ValueError) as error:
            raise PreflightError(f"cannot read {saved}: {error}; move the workdir aside") from None
        diff = model_config_diff(previous, config)
        if previous.get("phase") != config.phase:
            diff.append(f"phase {previous.get('phase')} -> {config.phase}")
        if diff:
            raise PreflightError(
                f"{workdir} holds checkpoints of another model or phase (differs in: "
                f"{', '.join(diff)}); use a new --workdir, or the config it was trained with "
                f"({saved})"
            )
    for flag in ("train", "val"):
        folder = config.data[flag]
        if not folder:
            continue
        outputs = [workdir / name for name in OUTPUT_FOLDERS]
        if any(is_within(folder, out) for out in outputs) or is_within(workdir, folder):
            raise PreflightError(
                f"--config.data.{flag}={folder} overlaps the run's outputs in {workdir} "
                "(its PNG grids and exports would be read as images): choose another --workdir"
            )


def check_run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> None:
    """Runs every check; raises PreflightError (one line) at the first failure. Writes nothing."""
    workdir = pathlib.Path(workdir).resolve()
    check_flags(config)
    data_cfg = config.data
    if (data_cfg.train or data_cfg.tfds_name) and not data_cfg.val:
        raise PreflightError("--config.data.val (a held-out image folder) is required")
    if data_cfg.train:
        check_training_images(data_cfg.train, int(data_cfg.crop_size))
    if data_cfg.val:
        check_validation_images(data_cfg.val)
    check_workdir(config, workdir)
    check_init_from(config, workdir)
