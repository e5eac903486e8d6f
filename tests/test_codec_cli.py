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
    params = jax.jit(svi_jax.init_params, static_argnums=0)(model, jax.random.PRNGKey(0))
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
