"""Which files a data folder contributes, and how bad ones are reported (no model needed).

Image kinds: every format the codec writes (.bmp/.tif/.ppm too) and GIF are read by the
training loader, eval.py and svi-codec (one list, `image_io.IMAGE_EXTENSIONS`); files with
another image extension are named in one line. Bad files: eval.py names every file that does
not decode in one error before any compilation; the training preflight decodes them too (a
sample above `TRAIN_DECODE_LIMIT`, said so) and lists every failure in one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eval as eval_cli
from svi_jax.data import checks, image_io
from svi_jax.data import loader as dp
from svi_jax.evaluation import sources
from svi_jax.training import preflight


def _rgb(seed: int, h: int = 20, w: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def _write_kinds(folder: Path) -> dict[str, np.ndarray]:
    """One image per accepted kind (palette GIF, BMP, TIFF, PPM, PGM, ...); name -> pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate(["a.png", "b.bmp", "c.tif", "d.TIFF", "e.ppm", "f.webp"]):
        written[name] = _rgb(i)
        image_io.save_image(folder / name, written[name])
    gray = _rgb(7)[..., 0]
    Image.fromarray(gray).save(folder / "g.pgm")
    written["g.pgm"] = np.repeat(gray[..., None], 3, axis=2)
    palette = Image.fromarray(_rgb(8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(folder / "h.gif")
    written["h.gif"] = np.asarray(palette.convert("RGB"))
    return written


def test_every_output_format_and_gif_is_an_input():
    assert set(image_io.OUTPUT_FORMATS) <= set(image_io.IMAGE_EXTENSIONS)
    registered = Image.registered_extensions()
    for ext in image_io.IMAGE_EXTENSIONS:  # each one a format Pillow reads
        assert registered.get(ext) in {"PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM"}
    assert not set(image_io.IMAGE_EXTENSIONS) & image_io.OTHER_IMAGE_EXTENSIONS


def test_gif_bmp_tif_ppm_are_listed_and_loaded(tmp_path):
    written = _write_kinds(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    files = dp.list_images(tmp_path)
    assert [f.name for f in files] == sorted(written)
    for file in files:
        np.testing.assert_array_equal(dp.load_image(file), written[file.name])
    dataset = sources.load_dataset(str(tmp_path))  # eval.py's reader: the same files
    assert sorted(dataset.names) == sorted(written) and dataset.notes == ()
    with dp.make_train_loader(  # and training
        tmp_path, batch_size=len(written), crop_size=16, shard_index=0, shard_count=1
    ) as loader:
        assert loader.num_images == len(written)


def test_files_with_another_image_extension_are_named_in_one_line(tmp_path, caplog):
    _write_kinds(tmp_path / "train")
    for name in ("photo.HEIC", "sub/icon.ico", "x.avif", "readme.txt", "data.csv"):
        (tmp_path / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / name).write_bytes(b"whatever")
    skipped: list[str] = []
    dp.list_images(tmp_path / "train", skipped)
    assert skipped == ["photo.HEIC", "sub/icon.ico", "x.avif"]
    line = checks.skipped_images_line(tmp_path / "train", skipped)
    assert "\n" not in line and line.startswith("3 file(s) under") and "sub/icon.ico" in line
    assert checks.skipped_images_line(tmp_path, []) is None

    dataset = sources.load_dataset(str(tmp_path / "train"))
    assert dataset.notes == (line,)
    with caplog.at_level(logging.WARNING, logger="svi_jax.training.preflight"):
        preflight.check_training_images(str(tmp_path / "train"), 16)
    assert [r.getMessage() for r in caplog.records] == [line]


def _bad_folder(folder: Path, count: int) -> list[str]:
    """Two good images and `count` bad ones (truncated PNGs: the header reads, the pixels not;
    and a text file named .png); returns the bad names."""
    folder.mkdir(parents=True)
    image_io.save_image(folder / "good1.png", _rgb(0, 64, 64))
    image_io.save_image(folder / "good2.jpg", _rgb(1))
    full = (folder / "good1.png").read_bytes()
    bad = []
    for i in range(count):
        name = f"bad_{i:02d}.png"
        if i % 2:
            (folder / name).write_text("not an image")
        else:
            (folder / name).write_bytes(full[: len(full) // 2])  # truncated
        bad.append(name)
    return bad


def test_eval_names_every_bad_image_at_once(tmp_path):
    bad = _bad_folder(tmp_path / "imgs", 3)
    with pytest.raises(sources.EvalInputError) as caught:
        sources.load_dataset(str(tmp_path / "imgs"))
    lines = str(caught.value).splitlines()
    assert lines[0] == f"3 of 5 images in --data {tmp_path / 'imgs'} cannot be decoded:"
    assert [line.split(":")[0].strip() for line in lines[1:4]] == [
        str(tmp_path / "imgs" / name) for name in bad
    ]
    assert "truncated" in lines[1] and "cannot identify" in lines[2]


def test_eval_bad_image_error_also_names_skipped_files(tmp_path):
    """A folder with a bad image and a file of an unread image format: one error says both
    (the skip note used to come only after the bad image was fixed)."""
    _bad_folder(tmp_path / "imgs", 1)
    (tmp_path / "imgs" / "photo.heic").write_bytes(b"not read")
    with pytest.raises(sources.EvalInputError) as caught:
        sources.load_dataset(str(tmp_path / "imgs"))
    text = str(caught.value)
    assert "photo.heic" in text and "cannot be decoded" in text


def test_eval_caps_the_list_of_bad_images(tmp_path, capsys):
    _bad_folder(tmp_path / "imgs", checks.MAX_LISTED_FILES + 5)
    with pytest.raises(sources.EvalInputError) as caught:
        sources.load_dataset(str(tmp_path / "imgs"))
    assert eval_cli._error(str(caught.value)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("eval.py: error: 25 of 27 images in --data")
    assert len(err) == 1 + checks.MAX_LISTED_FILES + 2  # count, 20 files, "and 5 more", hint
    assert err[-2] == "  ... and 5 more" and "fix or remove them" in err[-1]


def test_training_preflight_decodes_and_lists_every_bad_file(tmp_path, caplog):
    bad = _bad_folder(tmp_path / "train", 3)
    with caplog.at_level(logging.INFO, logger="svi_jax.training.preflight"):
        preflight.check_training_images(str(tmp_path / "train"), 16)
    text = caplog.text
    assert "3 of 5 images in the training data" in text
    assert all(name in text for name in bad)  # the truncated ones too: decoded, not headers
    assert "sample" not in text


def test_training_preflight_says_when_it_samples(tmp_path, caplog, monkeypatch):
    _bad_folder(tmp_path / "train", 4)
    monkeypatch.setattr(preflight, "TRAIN_DECODE_LIMIT", 3)
    with caplog.at_level(logging.INFO, logger="svi_jax.training.preflight"):
        preflight.check_training_images(str(tmp_path / "train"), 16)
    assert "decoded a sample of 3" in caplog.text and "all 6 images" in caplog.text
    # the bad-file count says what it counts: every header, decoding of the sample only
    assert "(all headers read, a sample of 3 decoded) cannot be decoded" in caplog.text


def test_training_preflight_refuses_a_folder_where_nothing_decodes(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    image_io.save_image(folder / "a.png", _rgb(0))
    full = (folder / "a.png").read_bytes()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(full[: len(full) // 2])
    with pytest.raises(preflight.PreflightError, match=r"no training image .* \(2 files\).*b\.png"):
        preflight.check_training_images(str(folder), 16)


def test_validation_preflight_names_every_bad_file(tmp_path):
    bad = _bad_folder(tmp_path / "val", 2)
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check_validation_images(str(tmp_path / "val"))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("2 of 4 validation images")
    assert all(name in message for name in bad)


def test_training_preflight_refuses_a_large_folder_whose_sample_never_decodes(
    tmp_path, monkeypatch
):
    """Above the decode limit only a sample is decoded: all of it failing is an error too
    (before, "every file bad" needed all N files decoded and so could never trigger)."""
    folder = tmp_path / "train"
    folder.mkdir()
    image_io.save_image(folder / "a.png", _rgb(0, 64, 64))
    full = (folder / "a.png").read_bytes()
    for i in range(5):  # headers read, pixels do not
        (folder / f"{i}.png").write_bytes(full[: len(full) // 2])
    (folder / "a.png").write_bytes(full[: len(full) // 2])
    monkeypatch.setattr(preflight, "TRAIN_DECODE_LIMIT", 3)
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check_training_images(str(folder), 16)
    message = str(caught.value)
    assert "\n" not in message
    assert "3 of the 3 decoded (a sample of 6 files) fail" in message


def test_validation_preflight_names_up_to_the_listing_cap(tmp_path):
    bad = _bad_folder(tmp_path / "val", 5)
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check_validation_images(str(tmp_path / "val"))
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in bad)  # more than 3 named


def test_find_bad_images_gives_the_sizes_eval_uses(tmp_path):
    bad = _bad_folder(tmp_path / "imgs", 2)
    files = image_io.list_images(tmp_path / "imgs")
    sizes: list[tuple[int, int]] = []
    found = checks.find_bad_images(files, sizes=sizes)
    assert [f.name for f, _ in found] == bad
    assert sizes == [(64, 64), (20, 24)]  # good1.png, good2.jpg in listing order
    (tmp_path / "imgs" / bad[0]).unlink()
    (tmp_path / "imgs" / bad[1]).unlink()
    assert sources.load_dataset(str(tmp_path / "imgs")).sizes == ((64, 64), (20, 24))


def test_a_later_phase_does_not_decode_the_training_folder_again(tmp_path, monkeypatch):
    """Every phase of a run preflights its data: the decoding (up to TRAIN_DECODE_LIMIT
    images) is done once per folder and crop, not once per phase."""
    _bad_folder(tmp_path / "train", 1)
    decoded = []
    real = preflight.find_bad_images
    monkeypatch.setattr(
        preflight, "find_bad_images", lambda files: decoded.append(files) or real(files)
    )
    for _ in range(3):  # warming, main, gan
        preflight.check_training_images(str(tmp_path / "train"), 16)
    assert len(decoded) == 1
