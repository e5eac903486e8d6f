"""Tests for svi_jax.data.loader and svi_jax.data.image_io (small images, in-process grain)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svi_jax.data import image_io
from svi_jax.data import loader as dp

CROP = 16


def _labelled_image(label: int, height: int = 24, width: int = 30, seed: int = 0) -> np.ndarray:
    """Random texture whose red channel is the constant `label`, so a crop names its file."""
    image = np.random.default_rng(seed + label).integers(0, 256, (height, width, 3), np.uint8)
    image[:, :, 0] = label
    return image


def _write_folder(folder: Path, labels, suffixes=(".png",), **kwargs) -> list[Path]:
    paths = []
    for i, label in enumerate(labels):
        path = folder / f"img_{label:03d}{suffixes[i % len(suffixes)]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_labelled_image(label, **kwargs)).save(path, format="PNG")
        paths.append(path)
    return paths


def _labels(batch: np.ndarray) -> list[int]:
    """The label of each crop (its constant red value), checking it is constant."""
    red = np.round(batch[..., 0] * 255).astype(int)
    assert (red == red[:, :1, :1]).all(), "a crop mixes pixels of different images"
    return [int(v) for v in red[:, 0, 0]]


def _take(loader, count: int) -> list[np.ndarray]:
    return [next(loader) for _ in range(count)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    _write_folder(tmp_path / "a", [10, 20, 30], suffixes=(".png", ".PNG"))
    _write_folder(tmp_path / "b" / "deep", [40, 50, 60])
    return tmp_path


def test_list_images_recursive_case_insensitive_sorted(tmp_path: Path):
    _write_folder(tmp_path / "z", [1])
    _write_folder(tmp_path / "a", [2], suffixes=(".JPG",))  # PNG bytes; listing is by name
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    _write_folder(tmp_path / ".hidden", [3])
    (tmp_path / "m.WebP").write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in dp.list_images(tmp_path)]
    assert names == ["a/img_002.JPG", "m.WebP", "z/img_001.png"]


def test_batches_are_float_crops_of_the_images(folder: Path):
    with dp.make_train_loader(
        folder, batch_size=4, crop_size=CROP, seed=0, shard_count=1, shard_index=0
    ) as loader:
        assert loader.num_images == 6
        batches = _take(loader, 3)
    sources = {label: _labelled_image(label) for label in (10, 20, 30, 40, 50, 60)}
    corners = []
    for batch in batches:
        assert batch.shape == (4, CROP, CROP, 3) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        for crop, label in zip(batch, _labels(batch), strict=True):
            pixels = np.round(crop * 255).astype(np.uint8)
            windows = np.lib.stride_tricks.sliding_window_view(sources[label], pixels.shape)
            matches = np.argwhere((windows == pixels).all(axis=(-3, -2, -1)))
            assert len(matches), "crop is not a window of its image"
            corners.append(tuple(matches[0][:2]))
    assert len({top for top, _ in corners}) > 1 and len({left for _, left in corners}) > 1
    # Shuffled, repeating: 12 crops cover every image twice.
    seen = sorted(label for batch in batches for label in _labels(batch))
    assert seen == sorted([10, 20, 30, 40, 50, 60] * 2)


def test_same_seed_same_batches_other_seed_differs(folder: Path):
    def first(seed):
        with dp.make_train_loader(
            folder, batch_size=3, crop_size=CROP, seed=seed, shard_index=0, shard_count=1
        ) as loader:
            return np.stack(_take(loader, 4))

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shards_see_disjoint_files(tmp_path: Path):
    labels = list(range(10, 80, 10))  # 7 files: one is dropped so both hosts get 3
    _write_folder(tmp_path, labels)
    seen = []
    for index in (0, 1):
        with dp.make_train_loader(
            tmp_path, batch_size=3, crop_size=CROP, seed=0, shard_index=index, shard_count=2
        ) as loader:
            assert loader.num_images == 3
            batches = _take(loader, 4)
            assert len(set(_labels(batches[0]))) == 3  # one epoch: each image of the part once
            seen.append({lab for batch in batches for lab in _labels(batch)})
    assert len(seen[0]) == len(seen[1]) == 3
    assert not seen[0] & seen[1]
    with pytest.raises(ValueError, match="shard_index"):
        dp.make_train_loader(tmp_path, batch_size=1, shard_index=2, shard_count=2)


def test_default_shard_is_this_jax_process(folder: Path):
    with dp.make_train_loader(folder, batch_size=2, crop_size=CROP) as loader:
        assert loader.num_images == 6  # one process: everything
    with pytest.raises(ValueError, match="closed"):
        next(loader)


def test_padding_of_small_images(tmp_path: Path):
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    padded = dp.pad_to_size(image, 7)  # needs 3 rows (1 + 2) and 2 columns: reflect fits
    assert padded.shape == (7, 7, 3)
    np.testing.assert_array_equal(padded[1:5, 1:6], image)
    np.testing.assert_array_equal(padded[0], padded[2])  # reflected about row 1
    np.testing.assert_array_equal(padded[:, 0], padded[:, 2])
    tiny = np.full((1, 2, 3), 9, np.uint8)
    tiny[0, 1] = 200
    padded = dp.pad_to_size(tiny, 6)  # a 1-pixel side cannot reflect: symmetric instead
    assert padded.shape == (6, 6, 3)
    assert set(np.unique(padded)) == {9, 200}
    assert dp.pad_to_size(image, 3) is image
    _write_folder(tmp_path, [7, 8], height=3, width=40)
    with dp.make_train_loader(
        tmp_path, batch_size=2, crop_size=CROP, shard_index=0, shard_count=1
    ) as loader:
        batch = next(loader)
    assert batch.shape == (2, CROP, CROP, 3)
    assert sorted(_labels(batch)) == [7, 8]


def test_undecodable_file_is_skipped_counted_and_logged_once(tmp_path: Path, caplog):
    _write_folder(tmp_path, [10, 20, 30])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    good = tmp_path / "img_010.png"
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[:100])
    caplog.set_level(logging.WARNING, logger="svi_jax.data.loader")
    with dp.make_train_loader(
        tmp_path, batch_size=5, crop_size=CROP, seed=0, shard_index=0, shard_count=1
    ) as loader:
        labels = [lab for batch in _take(loader, 6) for lab in _labels(batch)]  # 6 epochs
        assert loader.num_skipped == 2
        assert sorted(Path(p).name for p in loader.skipped_files) == [
            "broken.png",
            "truncated.jpg",
        ]
    assert set(labels) == {10, 20, 30}
    warnings = [r.getMessage() for r in caplog.records if "skipping image" in r.getMessage()]
    assert len(warnings) == 2
    assert any("broken.png" in w for w in warnings) and any("truncated" in w for w in warnings)


def test_unusable_paths_raise_data_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        dp.DataError, match=r"(?s)empty.*\.jpg, \.jpeg, .*\.png, .*\.webp, \.gif, \.bmp"
    ):
        dp.make_train_loader(empty, batch_size=1)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "readme.txt").write_text("hi")
    with pytest.raises(dp.DataError, match=r"texts.*readme\.txt"):
        dp.list_images(texts)
    with pytest.raises(dp.DataError, match="does not exist"):
        dp.list_images(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("a.png", "b.jpeg"):
        (corrupt / name).write_bytes(b"not an image at all")
    with pytest.raises(dp.DataError, match="all 2 image files failed to decode"):
        dp.make_train_loader(corrupt, batch_size=1, shard_index=0, shard_count=1)
    _write_folder(tmp_path / "one", [1])
    with pytest.raises(dp.DataError, match="cannot be split over 2 hosts"):
        dp.make_train_loader(tmp_path / "one", batch_size=1, shard_index=0, shard_count=2)


def test_resumed_iterator_continues_the_same_sequence(folder: Path):
    def loader():
        return dp.make_train_loader(
            folder, batch_size=4, crop_size=CROP, seed=3, shard_index=0, shard_count=1
        )

    with loader() as uninterrupted:
        _take(uninterrupted, 2)
        state = uninterrupted.get_state()
        expected = _take(uninterrupted, 3)
    assert isinstance(state, bytes)
    with loader() as resumed:
        first = next(resumed)
        resumed.set_state(state)
        got = _take(resumed, 3)
    assert not np.array_equal(first, expected[0])  # the restore really moved the iterator
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(want, have)
    (folder / "a" / "img_010.png").rename(folder / "a" / "img_011.png")  # other file list
    with loader() as changed, pytest.raises(ValueError, match="DataSource.*does not match"):
        changed.set_state(state)


def test_load_image_errors_name_the_file(tmp_path: Path):
    with pytest.raises(dp.MissingImageError, match="nope.png"):
        dp.load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError):
        dp.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("hello")
    with pytest.raises(dp.DataError, match="bad.jpg"):
        dp.load_image(bad)


def test_load_image_converts_modes_to_rgb8(tmp_path: Path):
    gray = np.array([[0, 128], [255, 7]], np.uint8)
    cases = {
        "gray.png": (Image.fromarray(gray), np.repeat(gray[..., None], 3, 2)),
        "gray16.png": (
            Image.fromarray(gray.astype(np.uint16) * 257),
            np.repeat(gray[..., None], 3, 2),
        ),
    }
    rgba = np.dstack([np.full((2, 2, 3), 40, np.uint8), np.zeros((2, 2), np.uint8)])
    cases["rgba.png"] = (Image.fromarray(rgba), rgba[..., :3])
    palette = Image.fromarray(np.full((2, 2, 3), (10, 200, 30), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=4
    )
    cases["palette.png"] = (palette, np.full((2, 2, 3), (10, 200, 30), np.uint8))
    for name, (image, expected) in cases.items():
        image.save(tmp_path / name)
        loaded = dp.load_image(tmp_path / name)
        assert loaded.dtype == np.uint8 and loaded.shape == (2, 2, 3), name
        np.testing.assert_array_equal(loaded, expected, err_msg=name)


def test_skimage_photos_materialise_and_load(tmp_path: Path):
    photos = dict(dp.skimage_photos())
    assert sorted(photos) == sorted(dp.SKIMAGE_PHOTOS) and len(photos) >= 5
    for name, image in photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 256, name  # full 256 crops without padding
    train, val = dp.write_skimage_split(tmp_path)
    assert [p.stem for p in dp.list_images(val)] == list(dp.SKIMAGE_VALIDATION_PHOTOS)
    assert sorted(p.stem for p in dp.list_images(train)) == sorted(
        set(photos) - set(dp.SKIMAGE_VALIDATION_PHOTOS)
    )
    name, image = next(dp.eval_images(val))
    assert name == "astronaut.png"
    np.testing.assert_array_equal(image, photos["astronaut"])  # PNG is lossless
    with dp.make_train_loader(
        train, batch_size=2, crop_size=256, shard_index=0, shard_count=1
    ) as loader:
        assert next(loader).shape == (2, 256, 256, 3)
    with pytest.raises(dp.DataError, match="unknown"):
        dp.skimage_photos(["lena"])


def test_worker_processes_give_the_same_batches(tmp_path: Path):
    _write_folder(tmp_path, [10, 20, 30, 40])
    (tmp_path / "broken.png").write_bytes(b"junk")
    batches = {}
    for workers in (0, 1):
        with dp.make_train_loader(
            tmp_path,
            batch_size=2,
            crop_size=CROP,
            seed=1,
            num_workers=workers,
            shard_index=0,
            shard_count=1,
        ) as loader:
            batches[workers] = np.stack(_take(loader, 5))
            assert loader.num_skipped == 1  # counted in the main process
    np.testing.assert_array_equal(batches[0], batches[1])


def test_tfds_data_source_without_tensorflow(tmp_path: Path):
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets missing")
    import io

    class SviTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Image(shape=(None, None, 3))
            features = tfds.features.FeaturesDict({"image": image})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for label in (10, 20, 30, 40):
                buffer = io.BytesIO()  # encoded bytes: preparing needs no TensorFlow
                Image.fromarray(_labelled_image(label)).save(buffer, format="PNG")
                buffer.seek(0)
                yield label, {"image": buffer}

    SviTinyImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    seen = []
    for index in (0, 1):
        with dp.make_tfds_train_loader(
            "svi_tiny_images",
            data_dir=tmp_path,
            batch_size=2,
            crop_size=CROP,
            shard_index=index,
            shard_count=2,
        ) as loader:
            batch = next(loader)
            assert batch.shape == (2, CROP, CROP, 3) and batch.dtype == np.float32
            seen.append(set(_labels(batch)))
    assert seen[0] | seen[1] == {10, 20, 30, 40} and not seen[0] & seen[1]


def test_save_png_round_trip(tmp_path: Path):
    image = _labelled_image(5)
    path = image_io.save_png(tmp_path / "sub" / "x.png", image)
    np.testing.assert_array_equal(dp.load_image(path), image)
    assert not list((tmp_path / "sub").glob(".*tmp"))


def test_moved_folder_restores_the_saved_position(tmp_path: Path):
    """grain compares the data source's repr on restore: it names files relative to their
    folder, so the same images under another path continue the saved sequence."""
    _write_folder(tmp_path / "old", [10, 20, 30, 40, 50])

    def loader(folder):
        return dp.make_train_loader(
            folder, batch_size=2, crop_size=CROP, seed=3, shard_index=0, shard_count=1
        )

    with loader(tmp_path / "old") as uninterrupted:
        _take(uninterrupted, 3)
        state = uninterrupted.get_state()
        expected = _take(uninterrupted, 3)
    (tmp_path / "old").rename(tmp_path / "new")
    with loader(tmp_path / "new") as moved:
        moved.set_state(state)
        got = _take(moved, 3)
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(want, have)


@pytest.mark.parametrize("workers", [0, 2])
def test_seek_equals_the_uninterrupted_position(tmp_path: Path, workers: int):
    """`seek(k)` (used when a checkpoint's saved position does not fit) puts a fresh loader
    where k batches of an uninterrupted one leave it: same next batches, and with no worker
    processes the same grain state."""
    _write_folder(tmp_path, [10, 20, 30, 40, 50])

    def loader():
        return dp.make_train_loader(
            tmp_path,
            batch_size=2,
            crop_size=CROP,
            seed=5,
            num_workers=workers,
            shard_index=0,
            shard_count=1,
        )

    # 3 with 2 workers: worker 0 is one batch ahead of worker 1 (spawning them takes seconds)
    for k in (0, 3, 4) if workers == 0 else (3,):
        with loader() as uninterrupted:
            _take(uninterrupted, k)
            state = uninterrupted.get_state()
            expected = _take(uninterrupted, 3)
        with loader() as sought:
            next(sought)  # anywhere: seek sets the position, it does not add to it
            sought.seek(k)
            if workers == 0:
                assert sought.get_state() == state
            got = _take(sought, 3)
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_array_equal(want, have)
