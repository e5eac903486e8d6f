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


def _png_header(path: Path, width: int, height: int) -> Path:
    """A 1-bit PNG that declares width x height but holds almost no data: opening it reads
    the size (Pillow's decompression-bomb check runs there); decoding it fails (truncated)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def test_pillow_limit_is_ours_no_warning_below_it(tmp_path):
    assert Image.MAX_IMAGE_PIXELS >= image_io.MAX_PIXELS == 2**28
    # 100 MP: above Pillow's default 89.5 MP (a two-line DecompressionBombWarning), below ours.
    path = _png_header(tmp_path / "big.png", 20000, 5000)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(image_io.DataError, match="cannot decode image") as error:
            image_io.load_image(path)  # truncated data: fails decoding, not on its size
    assert "bomb" not in str(error.value) and "too large" not in str(error.value)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [
        (20000, 15000, "20000x15000 px (W x H) = 300,000,000 pixels"),  # Pillow: its error
        (40000, 20000, "more than 536,870,912 pixels"),  # above twice the limit
    ],
)
def test_images_above_our_limit_are_one_line_errors(tmp_path, width, height, size):
    import warnings

    path = _png_header(tmp_path / "huge.png", width, height)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(image_io.ImageTooLargeError) as error:
            image_io.load_image(path)
    message = str(error.value)
    assert message.startswith(f"image {path} is too large: {size}, above the limit of 268,435,456")
    assert "\n" not in message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_multi_frame_files_give_their_first_frame_and_a_note(tmp_path):
    red, blue = (Image.new("RGB", (7, 4), c) for c in ((255, 0, 0), (0, 0, 255)))
    gif = tmp_path / "anim.gif"
    red.save(gif, save_all=True, append_images=[blue, red], duration=100, loop=0)
    notes: list[str] = []
    image = image_io.load_image(gif, notes)
    assert image.shape == (4, 7, 3) and (image == (255, 0, 0)).all()
    assert notes == [f"{gif} holds 3 frames: only the first frame is used"]
    still = image_io.save_png(tmp_path / "still.png", image)
    notes.clear()
    image_io.load_image(still, notes)
    assert notes == []
