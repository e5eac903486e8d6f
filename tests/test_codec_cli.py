"""The svi-codec CLI: round trip through files, and one-line errors that leave no output."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import svi_jax
from svi_jax.codec import Codec, info
from svi_jax.codec.cli import main
from svi_jax.configs import tiny
from svi_jax.weights.export import save_exported_model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A train.py-like workdir holding export/ with the tiny model from PRNGKey(0)."""
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(0))
    root = tmp_path_factory.mktemp("run")
    save_exported_model(root / "export", config, params)
    (root / "checkpoints" / "10").mkdir(parents=True)
    # Another model: the same with one bias changed (its hash differs).
    other = jax.tree_util.tree_map(np.asarray, params)
    other["context_model"]["bias"] = other["context_model"]["bias"] + 1.0
    save_exported_model(root.parent / f"{root.name}_model_b", config, other)
    return root


@pytest.fixture()
def images(tmp_path):
    rng = np.random.RandomState(0)
    rgb = (rng.rand(40, 70, 3) * 255).astype(np.uint8)
    paths = {}
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg", quality=95)
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.webp", lossless=True)
    Image.fromarray((rng.rand(40, 70) * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    for name in ("rgb.png", "gray.jpg", "rgba.webp", "deep.png"):
        paths[name] = tmp_path / name
    return paths


def _no_files(folder, prefix):
    return [p.name for p in folder.iterdir() if p.name.startswith(prefix) or ".tmp" in p.name]


def test_cli_round_trip(workdir, images, tmp_path, capsys):
    for name, path in images.items():
        sic = tmp_path / f"{name}.sic"
        assert main(["compress", str(path), str(sic), "--checkpoint", str(workdir)]) == 0, name
    sic = tmp_path / "rgb.png.sic"
    out = tmp_path / "out.png"
    ckpt = str(workdir / "checkpoints" / "10")  # a directory inside the workdir also works
    assert main(["decompress", str(sic), str(out), "--checkpoint", ckpt, "--level", "3"]) == 0
    assert np.asarray(Image.open(out)).shape == (40, 70, 3)
    cut = tmp_path / "cut.sic"
    assert main(["truncate", str(sic), str(cut), "--level", "3"]) == 0
    out2 = tmp_path / "out2.png"
    assert main(["decompress", str(cut), str(out2), "--checkpoint", str(workdir)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(out2)))
    assert info(cut.read_bytes())["coded_levels"] == 3
    assert main(["info", str(sic)]) == 0
    assert "level 16" in capsys.readouterr().out
    # The CLI and the library agree.
    codec = Codec(*_load(workdir))
    np.testing.assert_array_equal(
        codec.decompress(sic.read_bytes(), level=3), np.asarray(Image.open(out))
    )


def _load(workdir):
    from svi_jax.weights.export import load_exported_model

    config, params, _ = load_exported_model(workdir)
    return params, config


def test_cli_errors_leave_no_output(workdir, images, tmp_path, capsys):
    good = tmp_path / "good.sic"
    assert main(["compress", str(images["rgb.png"]), str(good), "--checkpoint", str(workdir)]) == 0
    capsys.readouterr()
    (tmp_path / "empty.sic").write_bytes(b"")
    (tmp_path / "noise.sic").write_bytes(np.random.RandomState(1).bytes(300))
    data = good.read_bytes()
    (tmp_path / "cut.sic").write_bytes(data[: len(data) - 7])
    (tmp_path / "text.png").write_text("not an image")
    other = workdir.parent / f"{workdir.name}_model_b"
    ck = ["--checkpoint", str(workdir)]
    cases = [
        ["decompress", str(tmp_path / "empty.sic"), str(tmp_path / "o1.png"), *ck],
        ["decompress", str(tmp_path / "noise.sic"), str(tmp_path / "o2.png"), *ck],
        ["decompress", str(tmp_path / "cut.sic"), str(tmp_path / "o3.png"), *ck],
        ["decompress", str(good), str(tmp_path / "o4.png"), "--checkpoint", str(other)],
        ["decompress", str(good), str(tmp_path / "o5.png"), *ck, "--level", "17"],
        ["decompress", str(tmp_path / "missing.sic"), str(tmp_path / "o6.png"), *ck],
        ["compress", str(tmp_path / "text.png"), str(tmp_path / "o7.sic"), *ck],
        [
            "compress",
            str(images["rgb.png"]),
            str(tmp_path / "o8.sic"),
            "--checkpoint",
            str(tmp_path / "nope"),
        ],
        [
            "compress",
            str(images["rgb.png"]),
            str(tmp_path / "o9.sic"),
            "--checkpoint",
            str(tmp_path),
        ],
        ["truncate", str(good), str(tmp_path / "o10.sic"), "--level", "0"],
        ["info", str(tmp_path / "noise.sic")],
    ]
    for argv in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("svi-codec: error:") and "\n" not in err, (argv, err)
        assert _no_files(tmp_path, "o") == [], argv


def test_module_entry_point(workdir, images, tmp_path):
    sic = tmp_path / "x.sic"
    assert main(["compress", str(images["rgb.png"]), str(sic), "--checkpoint", str(workdir)]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "svi_jax.codec", "info", str(sic), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"coded_levels": 16' in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "svi_jax.codec", "info", str(tmp_path / "none.sic")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_errors_name_their_file_and_flags_not_exception_classes(workdir, images, tmp_path, capsys):
    good = tmp_path / "good.sic"
    assert main(["compress", str(images["rgb.png"]), str(good), "--checkpoint", str(workdir)]) == 0
    data = good.read_bytes()
    files = {
        "photo.jpg": images["gray.jpg"].read_bytes(),
        "empty.sic": b"",
        "header.sic": data[:50],
        "crc.sic": data[:20] + bytes([data[20] ^ 1]) + data[21:],
        "cut.sic": api_truncate(data, 3),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    ck = ["--checkpoint", str(workdir)]
    other = workdir.parent / f"{workdir.name}_model_b"
    out = str(tmp_path / "o.png")
    cases = [
        (["photo.jpg"], "photo.jpg: not a .sic bitstream (wrong magic bytes)"),
        (["empty.sic"], "empty.sic: empty file: not a .sic bitstream"),
        (["header.sic"], "header.sic: truncated .sic header (50 of 99 bytes)"),
        (["crc.sic"], "crc.sic: corrupt .sic header (checksum mismatch)"),
        (["cut.sic", "--level", "5"], "cut.sic: level 5 not available: the file holds levels 1..3"),
        (["good.sic", "--level", "0"], "--level must be an integer in 1..16, got 0"),
        (["good.sic", "--seed", "-1"], "--seed must be in 0..2**64-1, got -1"),
    ]
    for argv, message in cases:
        sic = str(tmp_path / argv[0])
        assert main(["decompress", sic, out, *ck, *argv[1:]]) == 1, argv
        err = _error(capsys)
        assert err == f"svi-codec: error: {message.replace(argv[0], sic, 1)}", err
    assert main(["decompress", str(good), out, "--checkpoint", str(other)]) == 1
    err = _error(capsys)
    assert err.startswith(f"svi-codec: error: {good}: written by another model"), err
    assert f"--checkpoint {other} " in err
    for argv in (
        ["compress", str(images["rgb.png"]), str(tmp_path / "o.sic"), *ck, "--level", "0"],
        ["compress", str(images["rgb.png"]), str(tmp_path / "o.sic"), *ck, "--seed", "-1"],
        ["truncate", str(good), str(tmp_path / "o.sic"), "--level", "0"],
        ["info", str(tmp_path / "photo.jpg")],
    ):
        assert main(argv) == 1, argv
        err = _error(capsys)
        assert "Error" not in err and ("--" in err or "photo.jpg: not a .sic" in err), err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]


def api_truncate(data: bytes, level: int) -> bytes:
    from svi_jax.codec import truncate

    return truncate(data, level)


def _slice_start(data: bytes, k: int) -> int:
    """Byte offset of slice segment k (1-based) in a .sic file."""
    summary = info(data)
    return summary["header_bytes"] + summary["z_bytes"] + sum(summary["slice_bytes"][: k - 1])


@pytest.mark.parametrize("damage", ["cut", "checksum"])
def test_a_file_damaged_in_slice_k_still_decodes_below_k(workdir, images, tmp_path, capsys, damage):
    good = tmp_path / "good.sic"
    ck = ["--checkpoint", str(workdir)]
    assert main(["compress", str(images["rgb.png"]), str(good), *ck]) == 0
    data = good.read_bytes()
    start = _slice_start(data, 3) + 15  # inside slice 3's payload
    if damage == "cut":
        bad = data[:start]
        what = "file cut inside slice 3"
    else:
        bad = data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1 :]
        what = "corrupt bitstream: checksum mismatch in slice 3"
    sic = tmp_path / "bad.sic"
    sic.write_bytes(bad)
    capsys.readouterr()
    # Levels below the damage: the same image and the same truncated file as the intact one.
    assert main(["decompress", str(sic), str(tmp_path / "bad2.png"), *ck, "--level", "2"]) == 0
    assert main(["decompress", str(good), str(tmp_path / "good2.png"), *ck, "--level", "2"]) == 0
    decoded = [np.asarray(Image.open(tmp_path / f"{n}2.png")) for n in ("bad", "good")]
    np.testing.assert_array_equal(*decoded)
    assert main(["truncate", str(sic), str(tmp_path / "t.sic"), "--level", "2"]) == 0
    assert (tmp_path / "t.sic").read_bytes() == api_truncate(data, 2)
    capsys.readouterr()
    # Level 3 or more, and the default level, name the intact levels (never a silent level 2).
    expected = f"svi-codec: error: {sic}: {what}: levels 1..2 are intact (use --level 2)"
    for extra in ([], ["--level", "3"], ["--level", "16"]):
        assert main(["decompress", str(sic), str(tmp_path / "o.png"), *ck, *extra]) == 1
        assert _error(capsys) == expected
    assert main(["truncate", str(sic), str(tmp_path / "o.sic"), "--level", "3"]) == 1
    assert _error(capsys) == expected
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.sic").exists()
    # info reports the intact levels instead of failing.
    assert main(["info", str(sic)]) == 0
    printed = capsys.readouterr().out
    assert f"damaged: {what}: levels 1..2 are intact" in printed and "level  2:" in printed
    summary = info(bad)
    assert summary["available_levels"] == 2 and summary["damage"] == what
    # Damage in slice 1 leaves nothing to decode; the message says so.
    (tmp_path / "one.sic").write_bytes(data[: _slice_start(data, 1) + 5])
    assert main(["decompress", str(tmp_path / "one.sic"), str(tmp_path / "o.png"), *ck]) == 1
    assert _error(capsys).endswith("file cut inside slice 1: no level is intact")


def test_decompress_help_says_which_level_it_writes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["decompress", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "every level in the file" not in text
    assert "level of the one image written (default: the highest level the file holds)" in text


def test_sizes_are_printed_width_x_height_with_a_unit(workdir, images, tmp_path, capsys):
    sic, png = tmp_path / "a.sic", tmp_path / "a.png"
    ck = ["--checkpoint", str(workdir)]
    assert main(["compress", str(images["rgb.png"]), str(sic), *ck, "--level", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("bpp, 70x40 px (W x H)")  # a 40-row image
    assert main(["decompress", str(sic), str(png), *ck]) == 0
    assert capsys.readouterr().out.strip() == f"{png}: level 2, 70x40 px (W x H)"
    assert main(["info", str(sic)]) == 0
    assert ", 70x40 px (W x H), levels 2/2 present" in capsys.readouterr().out
