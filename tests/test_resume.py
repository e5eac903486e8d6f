"""Checkpoints: orbax keeps the latest N plus the best; resume uses the newest intact one; the
grain iterator position travels with it; a refused workdir is left untouched."""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from svi_jax.configs import tiny
from svi_jax.data import loader as dp
from svi_jax.training import preflight, train_and_evaluate
from svi_jax.training.checkpointing import Checkpointer, CheckpointError


def _config(keep: int = 2):
    cfg = tiny.get_config()
    cfg.train.keep_checkpoints = keep
    return cfg


SIZE = 4096  # large enough that orbax stores the array in its data files, not inline


def _state(step: int) -> dict:
    return {"step": jnp.int32(step), "w": jnp.arange(SIZE, dtype=jnp.float32) * step}


def _abstract():
    return {"step": jnp.int32(0), "w": jnp.zeros(SIZE, jnp.float32)}


def _steps(directory: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_keeps_latest_n_plus_the_best(tmp_path):
    ckpt = Checkpointer(tmp_path, _config(keep=2))
    losses = {2: 0.5, 4: 0.1, 6: 0.3}
    for step in range(1, 8):
        ckpt.save(step, _state(step), val_loss=losses.get(step))
    assert ckpt.best_step() == 4
    assert _steps(tmp_path / "checkpoints") == [4, 6, 7]
    ckpt.close()
    reopened = Checkpointer(tmp_path, _config(keep=2))  # the metric is on disk
    assert reopened.best_step() == 4 and reopened.latest_step() == 7


def test_opening_writes_nothing_and_no_checkpoint_means_none(tmp_path):
    ckpt = Checkpointer(tmp_path / "run", _config())
    assert ckpt.restore_newest_intact(_abstract()) is None
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: shutil.rmtree(d / "state" / "ocdbt.process_0"),  # the array data
        lambda d: shutil.rmtree(d / "state"),  # the whole state folder
        lambda d: [f.write_bytes(f.read_bytes()[:10]) for f in d.rglob("*") if f.is_file()],
    ],
    ids=["array-data-deleted", "state-folder-gone", "files-truncated"],
)
def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, caplog, damage):
    ckpt = Checkpointer(tmp_path, _config(keep=3))
    for step in (1, 2, 3):
        ckpt.save(step, _state(step), val_loss=1.0 if step == 1 else None)
    damage(tmp_path / "checkpoints" / "3")
    ckpt = Checkpointer(tmp_path, _config(keep=3))
    with caplog.at_level(logging.WARNING):
        state, step = ckpt.restore_newest_intact(_abstract())
    assert step == 2
    np.testing.assert_array_equal(state["w"], _state(2)["w"])
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("svi_jax")
    ]
    assert len(warnings) == 1 and "checkpoints/3" in warnings[0] and "step 2" in warnings[0]
    ckpt.save(3, _state(3))  # training on replaces the damaged step
    assert Checkpointer(tmp_path, _config(keep=3)).restore_newest_intact(_abstract())[1] == 3


def test_no_intact_checkpoint_is_one_clear_error(tmp_path):
    ckpt = Checkpointer(tmp_path, _config())
    ckpt.save(1, _state(1))
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint.*checkpoints/1.*Delete"):
        Checkpointer(tmp_path, _config()).restore_newest_intact(_abstract())


def _labelled(folder: pathlib.Path, labels) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for label in labels:
        image = np.random.default_rng(label).integers(0, 256, (20, 20, 3), np.uint8)
        image[..., 0] = label
        Image.fromarray(image).save(folder / f"{label:03d}.png")
    return folder


def _small_loader(folder):
    return dp.make_train_loader(
        folder, batch_size=2, crop_size=16, seed=1, shard_index=0, shard_count=1
    )


def _checkpoint_after_3_batches(workdir, make, then: int = 0):
    """(a Checkpointer in `workdir` that saved step 3 after 3 batches of a `make()` loader,
    the `then` batches that loader gives next)."""
    ckpt = Checkpointer(workdir, _config())
    with make() as loader:
        [next(loader) for _ in range(3)]
        ckpt.save(3, _state(3), loader.iterator)
        return ckpt, [next(loader) for _ in range(then)]


def test_grain_iterator_position_is_saved_with_the_checkpoint(tmp_path):
    folder = _labelled(tmp_path / "images", [10, 20, 30, 40, 50])

    make = functools.partial(_small_loader, folder)
    _, expected = _checkpoint_after_3_batches(tmp_path / "run", make, then=4)
    assert list((tmp_path / "run" / "checkpoints" / "3" / "data").glob("process_0-of-1.json"))
    with make() as resumed:
        first = next(resumed)
        Checkpointer(tmp_path / "run", _config()).restore_newest_intact(
            _abstract(), resumed.iterator
        )
        got = [next(resumed) for _ in range(4)]
    assert not np.array_equal(first, expected[0])
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(want, have)


def _snapshot(root: pathlib.Path) -> dict:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_a_refused_workdir_is_left_untouched(tmp_path):
    """A workdir trained with another model is refused before anything is written in it."""
    run = tmp_path / "run"
    Checkpointer(run, _config()).save(1, _state(1))
    before = _snapshot(run)
    other = _config()
    other.model.latent_channels = 2 * other.model.latent_channels
    with pytest.raises(preflight.PreflightError, match=r"another model.*latent_channels"):
        train_and_evaluate(other, run)
    other = _config()
    other.phase = "gan"
    with pytest.raises(preflight.PreflightError, match="phase main -> gan"):
        train_and_evaluate(other, run)
    assert _snapshot(run) == before


def test_preflight_names_the_bad_input(tmp_path):
    good = _labelled(tmp_path / "good", [10, 20])
    bad = _labelled(tmp_path / "bad", [10])
    (bad / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = _config()
    cfg.data.train, cfg.data.val = str(good), str(bad)
    with pytest.raises(preflight.PreflightError, match="zz_broken.png"):
        preflight.check_run(cfg, tmp_path / "run")
    cfg.data.val = str(good)
    cfg.data.crop_size = 50
    with pytest.raises(preflight.PreflightError, match="crop_size=50.*multiple of 64"):
        preflight.check_run(cfg, tmp_path / "run")
    cfg.data.crop_size = 64
    cfg.train.init_from = str(tmp_path / "run")
    with pytest.raises(preflight.PreflightError, match="own export"):
        preflight.check_run(cfg, tmp_path / "run")
    cfg.train.init_from = ""
    with pytest.raises(preflight.PreflightError, match="overlaps the run's outputs"):
        preflight.check_run(cfg, good / "run")  # its PNG grids would become training images
    preflight.check_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # checking writes nothing


@pytest.mark.slow
def test_validation_images_below_64_px_are_padded(tmp_path):
    """1x50, 10x10 and 20x30 validation images: validated (padded as the codec pads) and
    exported; no late crash (one tiny training step)."""
    from test_train import machinery_config

    val = tmp_path / "val"
    val.mkdir()
    rng = np.random.default_rng(0)
    for h, w in ((1, 50), (10, 10), (20, 30)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(val / f"v_{h}x{w}.png")
    cfg = machinery_config()
    cfg.train.update(num_steps=1, checkpoint_every=1, eval_every=0)
    cfg.data.train, cfg.data.val = str(val), str(val)
    result = train_and_evaluate(cfg, tmp_path / "run")
    assert np.isfinite(result["val"]["loss"])
    for row in result["val"]["levels"].values():
        assert np.isfinite(row["psnr"]) and np.isfinite(row["bpp"]) and row["bpp"] > 0
    assert (tmp_path / "run" / "export" / "export.json").is_file()
    assert os.path.isdir(tmp_path / "run" / "checkpoints" / "1")


def _svi_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("svi_jax")
    ]


def test_changed_data_resumes_the_state_with_one_warning(tmp_path, caplog):
    """A saved data position that does not fit the loader (here: one more image, so grain's
    sampler differs) is not damage: the state restores, the iterator is placed where the step
    puts it in the new data, and one warning line says so, quoting grain's whole sentence."""
    folder = _labelled(tmp_path / "images", [10, 20, 30, 40, 50])

    make = functools.partial(_small_loader, folder)
    ckpt, _ = _checkpoint_after_3_batches(tmp_path / "run", make)
    _labelled(folder, [60])
    with make() as straight:  # the new data, uninterrupted: batches 4.. follow step 3
        [next(straight) for _ in range(3)]
        expected = [next(straight) for _ in range(2)]
    with make() as resumed, caplog.at_level(logging.WARNING):
        state, step = Checkpointer(tmp_path / "run", _config()).restore_newest_intact(
            _abstract(), resumed.iterator, lambda s: resumed.seek(s) or f"after {s} batches"
        )
        got = [next(resumed) for _ in range(2)]
    assert step == 3
    np.testing.assert_array_equal(state["w"], _state(3)["w"])
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(want, have)
    (warning,) = _svi_warnings(caplog)
    assert "checkpoints/3" in warning and "after 3 batches" in warning, warning
    assert "Sampler in checkpoint does not match dataloader sampler.)" in warning, warning
    assert "damaged" not in warning and "Delete" not in warning, warning


def test_moved_workdir_resumes(tmp_path, caplog):
    """`cp -a` of a workdir (its scikit-image data folder inside it) resumes in the copy from
    the saved step, with the saved data position (no warning), and trains on."""
    from test_train import machinery_config

    cfg = machinery_config(num_steps=2, checkpoint_every=2, log_every=2)
    train_and_evaluate(cfg, tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "copy", symlinks=True)
    cfg.train.num_steps = 3
    with caplog.at_level(logging.INFO):
        result = train_and_evaluate(cfg, tmp_path / "copy")
    assert result["start"] == 2 and result["step"] == 3
    assert not _svi_warnings(caplog), _svi_warnings(caplog)


def test_error_reasons_are_whole_sentences():
    from svi_jax.training.checkpointing import describe_error

    grain_like = ValueError(
        "DataSource in checkpoint does not match datasource in dataloader.\n"
        "data source in checkpoint: ImageFileSource(num_files=3, sha1=0123)\n"
    )
    assert describe_error(grain_like) == (
        "ValueError: DataSource in checkpoint does not match datasource in dataloader."
    )
    long = OSError("could not read " + "very " * 60 + "long path")
    text = describe_error(long, limit=60)
    assert text.startswith("OSError: could not read very") and text.endswith("very...")
    assert len(text) <= len("OSError: ") + 60
    assert describe_error(KeyError()) == "KeyError"


def test_images_smaller_than_the_crop_are_noted_once(tmp_path, caplog):
    folder = tmp_path / "train"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"big": (70, 80), "thin": (30, 90), "small": (10, 12)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(folder / f"{name}.png")
    with caplog.at_level(logging.INFO, logger="svi_jax"):
        preflight.check_training_images(str(folder), 64)
        preflight.check_training_images(str(folder), 64)  # the next phase of the same run
    notes = [r.getMessage() for r in caplog.records if "reflect-padded" in r.getMessage()]
    assert len(notes) == 1, notes
    assert notes[0].startswith("2 of 3 training images are smaller than the 64-px crop")
    assert "small.png (12x10)" in notes[0]
