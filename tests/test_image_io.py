"""Image reading applies EXIF orientation everywhere (codec, training loader, eval); images
are written in the format their file name says, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svi_jax.data import image_io
from svi_jax.data import loader as dp
from svi_jax.evaluation import sources

ORIENTATION = 0x0112


def _stored() -> np.ndarray:
    """A 40x96 (HxW) landscape array with distinct rows and columns."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 96, 3), np.uint8)


def _save_with_orientation(path: Path, array: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif)  # PNG: lossless, so pixels compare exactly
    return path


# EXIF orientation -> the array a viewer shows (PIL ImageOps.exif_transpose semantics).
SHOWN = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # "rotate 90 CW to display": phones held upright
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_load_image_applies_exif_orientation(tmp_path, orientation):
    stored = _stored()
    path = _save_with_orientation(tmp_path / "phone.png", stored, orientation)
    np.testing.assert_array_equal(image_io.load_image(path), SHOWN[orientation](stored))


def test_training_loader_and_eval_read_the_shown_orientation(tmp_path):
    stored = _stored()
    folder = tmp_path / "photos"
    folder.mkdir()
    _save_with_orientation(folder / "phone.png", stored, 6)
    with dp.make_train_loader(folder, batch_size=1, crop_size=96, shard_index=0, shard_count=1):
        pass
    record = dp.ImageFileSource(dp.list_images(folder))[0]
    assert record["image"].shape == (96, 40, 3)
    dataset = sources.load_dataset(str(folder))
    assert dataset.sizes == ((96, 40),)
    np.testing.assert_array_equal(next(iter(dataset))[1], np.rot90(stored, -1))


@pytest.mark.parametrize(
    ("name", "pillow_format"),
    [
        ("a.png", "PNG"),
        ("a.JPG", "JPEG"),
        ("a.jpeg", "JPEG"),
        ("a.webp", "WEBP"),
        ("a.bmp", "BMP"),
        ("a.tiff", "TIFF"),
        ("a.ppm", "PPM"),
    ],
)
def test_save_image_writes_the_format_of_its_name(tmp_path, name, pillow_format):
    image = _stored()
    path = image_io.save_image(tmp_path / name, image)
    with Image.open(path) as written:
        assert written.format == pillow_format
    if pillow_format != "JPEG":  # every other output format is written losslessly
        np.testing.assert_array_equal(image_io.load_image(path), image)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left


def test_unknown_output_extension_is_refused_and_nothing_written(tmp_path):
    for name in ("a.xyz", "noext"):
        with pytest.raises(image_io.DataError, match=name):
            image_io.save_image(tmp_path / name, _stored())
    with pytest.raises(image_io.DataError, match=r"\.png"):
        image_io.save_png(tmp_path / "a.jpg", _stored())  # PNG bytes never in a .jpg
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(self, fp, format=None, **params):
        fp.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        image_io.save_image(tmp_path / "a.png", _stored())
    assert not list(tmp_path.iterdir())
