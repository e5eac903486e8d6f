"""No svi-codec command writes over its own input; outputs follow their file name; runtime
failures (out of memory) are one line with no output file."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from PIL import Image

import svi_jax
from svi_jax import safety
from svi_jax.codec import api
from svi_jax.codec.cli import main
from svi_jax.configs import tiny
from svi_jax.weights.export import save_exported_model


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))
    return save_exported_model(tmp_path_factory.mktemp("model") / "export", config, params)


@pytest.fixture(scope="module")
def sic(export_dir, tmp_path_factory):
    """(png path, sic path) of a 40x70 image compressed at every level."""
    folder = tmp_path_factory.mktemp("files")
    rgb = (np.random.RandomState(0).rand(40, 70, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "in.png")
    assert main(["compress", str(folder / "in.png"), str(folder / "a.sic"), *_ck(export_dir)]) == 0
    return folder / "in.png", folder / "a.sic"


def _ck(export_dir):
    return ["--checkpoint", str(export_dir)]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _aliases(path, tmp_path):
    """The same file under other names: ./relative, a symlink, a hard link."""
    link = tmp_path / f"link_{path.name}"
    link.symlink_to(path)
    hard = tmp_path / f"hard_{path.name}"
    os.link(path, hard)
    relative = os.path.relpath(path)
    return [str(path), f"./{relative}" if not relative.startswith(".") else relative, link, hard]


def test_compress_and_decompress_refuse_to_replace_their_input(
    export_dir, sic, tmp_path, capsys, monkeypatch
):
    png, data = sic
    monkeypatch.chdir(png.parent.parent)
    for command, source in (("compress", png), ("decompress", data)):
        before = source.read_bytes()
        (tmp_path / command).mkdir()
        for alias in _aliases(source, tmp_path / command):
            rc = main([command, str(source), str(alias), *_ck(export_dir)])
            assert rc == 1, (command, alias)
            err = _one_error_line(capsys)
            assert "is the input file" in err and source.name in err
            assert source.read_bytes() == before
        for f in (tmp_path / command).iterdir():
            f.unlink()
    # The model files are inputs too.
    target = export_dir / "params.msgpack"
    before = target.read_bytes()
    assert main(["compress", str(png), str(target), *_ck(export_dir)]) == 1
    assert "params.msgpack" in _one_error_line(capsys) and target.read_bytes() == before


def test_truncate_rewrites_its_input_only_with_in_place(sic, tmp_path, capsys):
    _, data = sic
    copy = tmp_path / "b.sic"
    copy.write_bytes(data.read_bytes())
    for out in (copy, f"{tmp_path}/./b.sic"):
        assert main(["truncate", str(copy), str(out), "--level", "2"]) == 1
        assert "--in-place" in _one_error_line(capsys)
        assert copy.read_bytes() == data.read_bytes()
    assert main(["truncate", str(copy), "--level", "2"]) == 1  # no output, no --in-place
    _one_error_line(capsys)
    assert main(["truncate", str(copy), "--level", "2", "--in-place"]) == 0
    assert copy.read_bytes() == api.truncate(data.read_bytes(), 2)
    assert [p.name for p in tmp_path.iterdir()] == ["b.sic"]  # no temporary left


@pytest.mark.parametrize(
    ("name", "magic"),
    [("o.png", b"\x89PNG"), ("o.jpg", b"\xff\xd8"), ("o.JPEG", b"\xff\xd8"), ("o.webp", b"RIFF")],
)
def test_decompress_writes_the_format_of_its_name(export_dir, sic, tmp_path, name, magic):
    _, data = sic
    out = tmp_path / name
    assert main(["decompress", str(data), str(out), *_ck(export_dir), "--level", "2"]) == 0
    assert out.read_bytes()[: len(magic)] == magic
    with Image.open(out) as image:
        assert image.size == (70, 40)


def test_unknown_or_lying_output_names_are_refused_before_work(
    export_dir, sic, tmp_path, capsys, monkeypatch
):
    png, data = sic
    called = []
    monkeypatch.setattr(api.Codec, "decompress", lambda *a, **k: called.append(1))
    for name in ("o.xyz", "noextension"):
        rc = main(["decompress", str(data), str(tmp_path / name), *_ck(export_dir)])
        assert rc == 1 and name in _one_error_line(capsys)
    assert not called and not list(tmp_path.iterdir())
    # .sic data under an image's name would lie about its format.
    for name in ("c.png", "c.jpg"):
        assert main(["compress", str(png), str(tmp_path / name), *_ck(export_dir)]) == 1
        assert "name it .sic" in _one_error_line(capsys)
        assert main(["truncate", str(data), str(tmp_path / name), "--level", "1"]) == 1
        _one_error_line(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 12.3GiB"),
        jax.errors.JaxRuntimeError("INTERNAL: something failed in XLA"),
    ],
)
def test_runtime_failures_are_one_line_without_output(
    export_dir, sic, tmp_path, capsys, monkeypatch, error
):
    png, data = sic

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(api.Codec, "compress", fail)
    monkeypatch.setattr(api.Codec, "decompress", fail)
    assert main(["compress", str(png), str(tmp_path / "x.sic"), *_ck(export_dir)]) == 1
    err = _one_error_line(capsys)
    assert ("out of memory" in err) == (
        not isinstance(error, RuntimeError) or "RESOURCE" in str(error)
    )
    assert main(["decompress", str(data), str(tmp_path / "x.png"), *_ck(export_dir)]) == 1
    _one_error_line(capsys)
    assert not list(tmp_path.iterdir())


def test_other_runtime_errors_stay_tracebacks(export_dir, sic, tmp_path, monkeypatch):
    png, _ = sic

    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(api.Codec, "compress", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["compress", str(png), str(tmp_path / "x.sic"), *_ck(export_dir)])


def test_same_file_helper(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    (tmp_path / "sub").mkdir()
    assert safety.same_file(a, tmp_path / "sub" / ".." / "a")
    assert not safety.same_file(a, tmp_path / "b")  # missing output: compared by path
    with pytest.raises(safety.OverwriteError, match="is the input file"):
        safety.refuse_overwrite([None, a], [tmp_path / "b", a])


def test_eval_and_train_entry_points_end_runtime_failures_in_one_line(
    export_dir, tmp_path, capsys, monkeypatch
):
    import eval as eval_cli
    from svi_jax import evaluation as ev

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9GiB")

    monkeypatch.setattr(ev, "run_evaluation", out_of_memory)
    out = tmp_path / "eval"
    args = ["--checkpoint", str(export_dir), "--out", str(out), "--inception", "none"]
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main([*args, "--no-progress"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("eval.py: error: out of memory") and not out.exists()
    # train.py wraps train_and_evaluate the same way, with its user errors as one line too.
    from svi_jax.training.preflight import PreflightError

    for error in (MemoryError(), PreflightError("--config.data.val x: bad")):
        with pytest.raises(SystemExit) as exit_info:
            with safety.fail_in_one_line("train.py", safety.training_errors()):
                raise error
        assert exit_info.value.code == 1
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.fixture()
def umask():
    """Sets the umask for one test (the process-wide value comes back afterwards)."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_outputs_get_the_mode_of_a_plain_write(export_dir, sic, tmp_path, umask):
    """mkstemp alone leaves 0600: new outputs get 0666 & ~umask, a replaced file keeps its mode."""
    from svi_jax.data.image_io import save_png
    from svi_jax.weights.export import save_exported_model

    png, data = sic
    for mask in (0o022, 0o027):
        umask(mask)
        folder = tmp_path / f"u{mask:o}"
        folder.mkdir()
        want = 0o666 & ~mask
        assert main(["compress", str(png), str(folder / "c.sic"), *_ck(export_dir)]) == 0
        assert main(["decompress", str(data), str(folder / "d.png"), *_ck(export_dir)]) == 0
        assert main(["truncate", str(data), str(folder / "t.sic"), "--level", "2"]) == 0
        save_png(folder / "grid.png", np.zeros((4, 4, 3), np.uint8))  # eval.py's grid.png path
        for name in ("c.sic", "d.png", "t.sic", "grid.png"):
            assert _mode(folder / name) == want, (name, oct(_mode(folder / name)), oct(want))
        config, params = tiny.get_config(), _params_of(export_dir)
        assert _mode(save_exported_model(folder / "export", config, params)) == 0o777 & ~mask
    # truncate --in-place (and any replaced output) keeps the file's own mode.
    kept = tmp_path / "u22" / "t.sic"
    os.chmod(kept, 0o640)
    assert main(["truncate", str(kept), "--level", "1", "--in-place"]) == 0
    assert _mode(kept) == 0o640 and api.info(kept.read_bytes())["coded_levels"] == 1


def _params_of(export_dir):
    from svi_jax.weights.export import load_exported_model

    return load_exported_model(export_dir)[1]


def test_missing_or_unwritable_output_folders_are_refused_before_decoding(
    export_dir, sic, tmp_path, capsys, monkeypatch
):
    png, data = sic
    called = []
    monkeypatch.setattr(api.Codec, "decompress", lambda *a, **k: called.append(1))
    monkeypatch.setattr(api.Codec, "compress", lambda *a, **k: called.append(1))
    missing = tmp_path / "no" / "such"
    for argv in (
        ["decompress", str(data), str(missing / "o.png"), *_ck(export_dir)],
        ["compress", str(png), str(missing / "o.sic"), *_ck(export_dir)],
        ["truncate", str(data), str(missing / "o.sic"), "--level", "1"],
    ):
        assert main(argv) == 1, argv
        assert _one_error_line(capsys) == f"svi-codec: error: no such folder: {missing} " + (
            f"(for output {argv[2]}); create it first"
        )
    assert not (tmp_path / "no").exists() and not called
    # A folder that refuses a new file (as root, chmod cannot make one): the check creates
    # the temporary file first, so the refusal comes before decoding and names the folder.
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".o.png.x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["decompress", str(data), str(tmp_path / "o.png"), *_ck(export_dir)]) == 1
    err = _one_error_line(capsys)
    assert err == f"svi-codec: error: cannot write into folder {tmp_path}: Permission denied"
    assert not called and not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["compress", "decompress", "write"])
def test_ctrl_c_is_one_line_exit_130_and_no_output(
    export_dir, sic, tmp_path, capsys, monkeypatch, where
):
    png, data = sic

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "write":  # interrupted between the temporary file and the rename
        monkeypatch.setattr(os, "replace", interrupt)
    else:
        monkeypatch.setattr(api.Codec, where, interrupt)
    for argv in (
        ["compress", str(png), str(tmp_path / "x.sic"), *_ck(export_dir)],
        ["decompress", str(data), str(tmp_path / "x.png"), *_ck(export_dir)],
    ):
        if where in ("compress", "decompress") and argv[0] != where:
            continue
        try:
            rc = main(argv)
        except KeyboardInterrupt:  # escaping it would also stop pytest itself
            pytest.fail(f"KeyboardInterrupt escaped svi-codec {argv[0]} ({where})")
        assert rc == 130, argv
        assert capsys.readouterr().err == "svi-codec: interrupted\n"
    assert not list(tmp_path.iterdir())


def test_sic_outputs_must_end_in_sic(export_dir, sic, tmp_path, capsys):
    png, data = sic
    for name in ("c.bin", "c", "c.sic.tmp"):
        out = str(tmp_path / name)
        assert main(["compress", str(png), out, *_ck(export_dir)]) == 1
        assert _one_error_line(capsys).startswith(
            f"svi-codec: error: {out}: output must end in .sic"
        )
        assert main(["truncate", str(data), out, "--level", "1"]) == 1
        assert "output must end in .sic" in _one_error_line(capsys)
    assert not list(tmp_path.iterdir())
    assert main(["compress", str(png), str(tmp_path / "c.SIC"), *_ck(export_dir)]) == 0


def test_writes_go_through_symlinks_to_their_target(export_dir, sic, tmp_path, capsys):
    """A rename onto a symlink would replace the link and leave its target old: outputs are
    written where the link points (as a plain write through it), the link stays a link."""
    png, data = sic
    full = data.read_bytes()
    real = tmp_path / "real.sic"
    real.write_bytes(full)
    os.chmod(real, 0o640)
    inplace = tmp_path / "inplace.sic"
    inplace.symlink_to(real.name)  # relative link, as `ln -s real.sic inplace.sic`
    assert main(["truncate", str(inplace), "--in-place", "--level", "2"]) == 0
    assert inplace.is_symlink() and real.read_bytes() == api.truncate(full, 2)
    assert _mode(real) == 0o640  # the target's mode is kept
    # compress / truncate to a link: its target gets the new file.
    target = tmp_path / "target.sic"
    target.write_bytes(b"old")
    link = tmp_path / "link.sic"
    link.symlink_to(target)
    assert main(["compress", str(png), str(link), *_ck(export_dir)]) == 0
    assert link.is_symlink() and api.info(target.read_bytes())["coded_levels"] == 16
    assert main(["truncate", str(data), str(link), "--level", "1"]) == 0
    assert link.is_symlink() and target.read_bytes() == api.truncate(full, 1)
    # A dangling link creates its target when the target's folder exists...
    (tmp_path / "sub").mkdir()
    dangling = tmp_path / "dangling.sic"
    dangling.symlink_to(tmp_path / "sub" / "new.sic")
    assert main(["truncate", str(data), str(dangling), "--level", "3"]) == 0
    assert dangling.is_symlink() and (tmp_path / "sub" / "new.sic").read_bytes() == (
        api.truncate(full, 3)
    )
    # ...and is one line naming both when it does not; nothing is written.
    nowhere = tmp_path / "nowhere.sic"
    nowhere.symlink_to(tmp_path / "missing" / "x.sic")
    for argv in (
        ["truncate", str(data), str(nowhere), "--level", "1"],
        ["compress", str(png), str(nowhere), *_ck(export_dir)],
    ):
        assert main(argv) == 1, argv
        err = _one_error_line(capsys)
        assert f"no such folder: {tmp_path / 'missing'}" in err and str(nowhere) in err, err
    assert nowhere.is_symlink() and not (tmp_path / "missing").exists()
    # A link whose target is named like an image does not get .sic data.
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"png")
    (tmp_path / "to_photo.sic").symlink_to(photo)
    assert main(["truncate", str(data), str(tmp_path / "to_photo.sic"), "--level", "1"]) == 1
    assert "named like an image" in _one_error_line(capsys) and photo.read_bytes() == b"png"
    # A symlink input to the same file is still refused without --in-place.
    assert main(["truncate", str(real), str(inplace), "--level", "1"]) == 1
    assert "--in-place" in _one_error_line(capsys)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_in_place_on_a_hard_link_cuts_that_name_only_as_documented(sic, tmp_path, capsys):
    _, data = sic
    full = data.read_bytes()
    one, other = tmp_path / "one.sic", tmp_path / "other.sic"
    one.write_bytes(full)
    os.link(one, other)
    assert main(["truncate", str(one), "--in-place", "--level", "2"]) == 0
    assert one.read_bytes() == api.truncate(full, 2) and other.read_bytes() == full
    with pytest.raises(SystemExit):
        main(["truncate", "--help"])
    assert "other links keep the old file" in " ".join(capsys.readouterr().out.split())


def test_info_text_names_the_encoder_and_the_entropy_model(sic, capsys):
    _, data = sic
    summary = api.info(data.read_bytes())
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert summary["encoder"] and summary["encoder"] in out
    assert f"entropy model {summary['entropy_digest']}" in out


def test_multi_frame_input_codes_its_first_frame_with_one_note(export_dir, tmp_path, capsys):
    red, blue = (Image.new("RGB", (70, 40), c) for c in ((255, 0, 0), (0, 0, 255)))
    gif = tmp_path / "anim.gif"
    red.save(gif, save_all=True, append_images=[blue], duration=100, loop=0)
    out = tmp_path / "anim.sic"
    assert main(["compress", str(gif), str(out), *_ck(export_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"svi-codec: note: {gif} holds 2 frames: only the first frame is used\n"
    )
    assert f"{out}: " in captured.out and api.info(out.read_bytes())["width"] == 70


def test_missing_default_checkpoint_says_where_it_was_looked_for(
    sic, tmp_path, monkeypatch, capsys
):
    png, _ = sic
    monkeypatch.chdir(tmp_path)
    assert main(["compress", str(png), "o.sic"]) == 1  # --checkpoint runs/tiny (default)
    err = _one_error_line(capsys)
    where = os.path.join(os.getcwd(), "runs", "tiny")
    assert f"checkpoint not found: {where} (looked up relative to the current directory)" in err
    assert not list(tmp_path.iterdir())
