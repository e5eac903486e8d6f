"""Where an evaluation's model and images come from, with one-line errors for user mistakes.

Models: an export (`svi_jax.weights.export`: an export dir or a train.py workdir holding
`export/`), or an official PyTorch state dict (.pth / .npz) with the config it was trained with.
Images: a folder (recursive, sorted), a single image file, the scikit-image photos
(`skimage`), or a TFDS dataset prepared locally (`tfds:NAME[/CONFIG][:SPLIT]`, read with
`tfds.data_source`, never downloaded).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator

import ml_collections
import numpy as np

from svi_jax.data.checks import bad_images_text, find_bad_images, skipped_images_line
from svi_jax.data.image_io import (
    SKIMAGE_VALIDATION_PHOTOS,
    DataError,
    MissingImageError,
    list_images,
    load_image,
    skimage_photos,
    to_rgb8,
)
from svi_jax.weights.export import ExportError, load_exported_model, params_hash


class EvalInputError(ValueError):
    """A flag, checkpoint or dataset the evaluation cannot use; the message says which."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
    config: ml_collections.ConfigDict
    params: dict
    params_hash: str
    path: str
    kind: str  # "export" or "official"


SKIMAGE_DEMO_CROP = 256  # side of the centre crops of the default 'skimage' data (px)


def _centre_crop(image, size: int):
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top : top + size, left : left + size]


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of a config name (tiny, paper, demo) or a configs/<name>.py file
    (`svi_jax.configs.load_config`).

    Raises:
      EvalInputError: unknown name, missing file, or a file that fails to load.
    """
    from svi_jax.configs import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        raise EvalInputError(str(error)) from None


def _model_diff(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict) -> list[str]:
    da, db = a.model.to_dict(), b.model.to_dict()
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v
    return sorted(k for k in set(da) | set(db) if norm(da.get(k)) != norm(db.get(k)))


def load_model(
    checkpoint: str | None = None,
    official_checkpoint: str | None = None,
    config_path: str | None = None,
) -> ModelSource:
    """Loads an export (`checkpoint`) or an official state dict (`official_checkpoint` + config).

    With both `checkpoint` and `config_path`, the export's model config must equal the file's.
    """
    if bool(checkpoint) == bool(official_checkpoint):
        raise EvalInputError("give exactly one of --checkpoint and --official-checkpoint")
    if official_checkpoint:
        if not config_path:
            raise EvalInputError("--official-checkpoint needs --config configs/<name>.py")
        import svi_jax
        from svi_jax.nn.model import build_model

        config = load_config_file(config_path)
        if not pathlib.Path(official_checkpoint).exists():
            raise EvalInputError(f"official checkpoint not found: {official_checkpoint}")
        try:
            params = svi_jax.import_official_state_dict(
                build_model(config.model), official_checkpoint
            )
        except svi_jax.CheckpointMismatchError as error:  # a ProgSIC state dict, other config
            raise EvalInputError(
                f"{official_checkpoint} does not fit {config_path} (another config?): {error}"
            ) from None
        except (svi_jax.CheckpointImportError, ValueError, OSError) as error:  # unreadable
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EvalInputError(f"--official-checkpoint: {first}") from None
        return ModelSource(
            config, params, params_hash(params, config), str(official_checkpoint), "official"
        )
    try:
        config, params, digest = load_exported_model(checkpoint)
    except ExportError as error:
        raise EvalInputError(str(error)) from None
    if config_path:
        diff = _model_diff(config, load_config_file(config_path))
        if diff:
            raise EvalInputError(
                f"checkpoint {checkpoint} has another model config than {config_path} "
                f"(differs in: {', '.join(diff)})"
            )
    return ModelSource(config, params, digest, str(checkpoint), "export")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named, sized, re-iterable list of images (loaded lazily, one at a time).

    `notes`: lines for the user found while listing and checking the images (files skipped
    for their extension, multi-frame files of which the first frame is used); eval.py prints
    them before the run."""

    source: str
    names: tuple[str, ...]
    loader: object  # callable(index) -> uint8 (H, W, 3)
    sizes: tuple[tuple[int, int], ...] | None = None  # (H, W) per image when known up front
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    def image_sizes(self) -> tuple[tuple[int, int], ...]:
        """(H, W) of every image (reads each image once when not known up front)."""
        if self.sizes is not None:
            return self.sizes
        return tuple(self.loader(i).shape[:2] for i in range(len(self.names)))

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for i, name in enumerate(self.names):
            yield name, self.loader(i)


def _folder(path: pathlib.Path) -> Dataset:
    """Every image under `path`, each decoded once up front (milliseconds each; the run loads
    them again one at a time): all the files that do not decode are named in one error before
    any compilation or model work, rather than one per run halfway through it. The sizes
    decide the metrics."""
    skipped: list[str] = []
    try:
        files = list_images(path, skipped)
    except DataError as error:
        raise EvalInputError(str(error)) from None
    root = path if path.is_dir() else path.parent
    names = tuple(f.relative_to(root).as_posix() for f in files)
    notes = [line] if (line := skipped_images_line(path, skipped)) else []
    sizes: list[tuple[int, int]] = []
    bad = find_bad_images(files, notes, sizes)
    if bad:
        raise EvalInputError(
            "\n".join([*notes, bad_images_text(bad, len(files), f"--data {path}")])
            + "\nfix or remove them"
        )

    def load(i: int) -> np.ndarray:
        try:
            return load_image(files[i])
        except (DataError, MissingImageError) as error:  # changed since the check
            raise EvalInputError(str(error)) from None

    return Dataset(str(path), names, load, tuple(sizes), tuple(notes))


def _tfds(spec: str) -> Dataset:
    """tfds:NAME[:SPLIT] from the local TFDS data dir (prepared beforehand, no download)."""
    body = spec[len("tfds:") :]
    name, _, split = body.partition(":")
    split = split or "validation"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise EvalInputError(f"{spec}: tensorflow_datasets is not installed") from None
    try:
        source = tfds.data_source(name, split=split, download=False)
    except Exception as error:  # tfds raises many types for missing/unprepared data
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EvalInputError(
            f"TFDS dataset {name} split {split} is not prepared locally ({first}); "
            f"prepare it with `tfds build {name}` or pass a folder"
        ) from None
    if len(source) == 0:
        raise EvalInputError(f"TFDS dataset {name} split {split} is empty")
    names = tuple(f"{name}/{split}/{i:05d}" for i in range(len(source)))
    return Dataset(spec, names, lambda i: to_rgb8(np.asarray(source[i]["image"])))


def load_dataset(data: str | None) -> Dataset:
    """A folder, an image file, 'skimage' (default: 256-px centre crops of the photos that
    train.py's default holds out, SKIMAGE_VALIDATION_PHOTOS), 'skimage-full' (all bundled
    photos, whole), or 'tfds:NAME[:SPLIT]'."""
    if data is None or data == "skimage":
        # The demo default: centre crops keep the 16-level curve (with LPIPS-vgg and DISTS, two
        # VGG16 passes per level) within minutes on a 2-core CPU. Only the photos that the
        # default training holds out: scores on training photos would measure memory.
        held_out = skimage_photos(SKIMAGE_VALIDATION_PHOTOS)
        photos = [(n, _centre_crop(im, SKIMAGE_DEMO_CROP)) for n, im in held_out]
        return Dataset("skimage-crops", tuple(n for n, _ in photos), lambda i: photos[i][1])
    if data == "skimage-full":
        photos = skimage_photos()
        return Dataset("skimage", tuple(n for n, _ in photos), lambda i: photos[i][1])
    if data.startswith("tfds:"):
        return _tfds(data)
    path = pathlib.Path(data)
    if path.exists():
        return _folder(path)
    if "/" not in data and not path.suffix:  # a bare name such as "clic" or "div2k"
        return _tfds(f"tfds:{data}")
    raise EvalInputError(
        f"data not found: {data} (a folder, an image, 'skimage', 'skimage-full' or tfds:NAME)"
    )


# Files an evaluation writes into its output folder (plots add rd_<metric>.png).
OUTPUT_NAMES = ("results.json", "results.csv", "results_per_image.csv", "grid.png")


def check_outputs(out_dir, inputs, data: str | None) -> None:
    """Refuses, before any work, an output folder whose files would replace an input (the
    checkpoint, a --compare file, an image...) or that lies inside the image folder, or is
    the folder of a single --data image: its plots would be read as images by the next run.

    Raises:
      EvalInputError: naming the output and the input.
    """
    from svi_jax.safety import OverwriteError, is_within, refuse_overwrite, same_file

    out_dir = pathlib.Path(out_dir)
    files = [pathlib.Path(p) for p in inputs if p and not pathlib.Path(p).is_dir()]
    outputs = [out_dir / n for n in OUTPUT_NAMES]
    outputs += [out_dir / f.name for f in files if f.name.startswith("rd_") and f.suffix == ".png"]
    try:
        refuse_overwrite(files, outputs)
    except OverwriteError as error:
        raise EvalInputError(f"{error} (--out)") from None
    # A single image: --out its own folder puts the plots beside it (subfolders are left
    # alone: `--data photo.png` from a project root keeps the default runs/tiny/eval).
    folder = pathlib.Path(data) if data else None
    beside = folder is not None and folder.is_file() and same_file(out_dir, folder.parent)
    if beside or (folder is not None and folder.is_dir() and is_within(out_dir, folder)):
        folder = folder.parent if beside else folder
        raise EvalInputError(
            f"--out {out_dir} is inside the image folder {folder} (--data {data}): its plots "
            "would be read as images next time; choose an --out outside it"
        )
