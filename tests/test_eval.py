"""Tests of eval.py / svi_jax.evaluation with configs/tiny.py on three 64x96 images.

The model is the tiny config (the reference set's official weights when present, else
init_params) after a few Adam steps on the rate of its own latents (h_a, h_s,
context, entropy parameters and the bottleneck; g_a/g_s frozen; as tests/test_codec.py does).
A random-init model is not usable for the rate check: its σ are far from its ŷ residuals and
the range coder's real size is ~13% BELOW the −log2 P estimate (measured: 0.87×), so the
"real within 1% of the estimate" property only holds for a model whose entropy model fits.
Real sizes also carry fixed costs that no estimate has: the header, 8 bytes of framing per
segment, and the coder's flush (whole 32-bit words, ≤ 8 bytes per stream). On 64x96 images
those are ~0.1 bpp, so the 1% check is on `bpp_payload` (no header/framing) with the per-stream
flush allowance of tests/test_codec.py::test_size_matches_estimate.
"""

from __future__ import annotations

import csv
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import reference_dir

import eval as eval_cli
import svi_jax
from svi_jax import evaluation as ev
from svi_jax.codec import Codec, truncate
from svi_jax.configs import tiny
from svi_jax.data.image_io import save_png
from svi_jax.nn.entropy_models import bits, gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC
from svi_jax.weights.export import save_exported_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLUSH_BYTES = 8  # coder flush allowance per stream (as tests/test_codec.py)


def picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 7 + yy / 5)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _briefly_train(model, params, steps: int = 15):
    """Adam on the rate of ŷ and ẑ (+ aux), g_a/g_s frozen: σ fits ŷ as in a trained codec."""
    x = jnp.asarray(picture(64, 64, 9), jnp.float32)[None] / 255.0
    y = model.apply({"params": params}, x, method=ProgressiveSIC.analysis)  # g_a frozen
    trainable = {k: v for k, v in params.items() if k not in ("ga", "gs")}
    frozen = {k: v for k, v in params.items() if k in ("ga", "gs")}
    opt = optax.adam(1e-2)

    def rate(p, noise):
        full = {"params": {**frozen, **p}}
        z = model.apply(full, y, method=ProgressiveSIC.hyper_analysis)
        medians = model.apply(full, method=ProgressiveSIC.z_medians)
        z_hat = jnp.round(z - medians) + medians
        hyper = model.apply(full, z_hat, method=ProgressiveSIC.hyper_synthesis)
        y_hat = jnp.round(y)
        scales, means = model.apply(full, hyper, y_hat, method=ProgressiveSIC.gaussian_params)
        lik_z = model.apply(full, z + noise, method=ProgressiveSIC.z_likelihood)
        aux = model.apply(full, method=ProgressiveSIC.aux_loss)
        lik_y = gaussian_likelihood(y_hat, means, scales)
        return jnp.sum(bits(lik_y)) + jnp.sum(bits(lik_z)) + 0.01 * aux

    @jax.jit
    def step(p, state, key):
        noise = jax.random.uniform(key, (1, 1, 1, model.hyper_channels), minval=-0.5, maxval=0.5)
        updates, state = opt.update(jax.grad(rate)(p, noise), state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(trainable)
    for i in range(steps):
        trainable, state = step(trainable, state, jax.random.PRNGKey(100 + i))
    return {**params, **trainable}


def _initial_params(model):
    """The official small-config weights of the reference set when present (a 3 s import),
    else init_params (~1 s)."""
    path = reference_dir() / "sic_small_A.npz"
    if path.exists():
        with np.load(path) as ref:
            return svi_jax.import_official_state_dict(model, ref)
    return svi_jax.init_params(model, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A train.py-like workdir (holding export/) and a folder of three 64x96 images."""
    root = tmp_path_factory.mktemp("eval")
    config = tiny.get_config()
    model = svi_jax.build_model(config.model)
    params = _briefly_train(model, _initial_params(model))
    save_exported_model(root / "run" / "export", config, params)
    for i in range(3):
        save_png(root / "images" / f"im{i}.png", picture(64, 96, i))
    return root


@pytest.fixture(scope="module")
def nets():
    return ev.runner.load_metric_networks()


@pytest.fixture(scope="module")
def e2e(workdir, nets, monkeypatch_module):
    """eval.py on the tiny checkpoint: every level, one sample."""
    monkeypatch_module.setattr(ev.runner, "load_metric_networks", lambda: nets)
    out = workdir / "out"
    rc = eval_cli.main(
        [
            "--checkpoint",
            str(workdir / "run"),
            "--data",
            str(workdir / "images"),
            "--out",
            str(out),
            "--inception",
            "none",  # even where pytorch-fid's weights sit in torch hub's cache
            "--no-progress",
        ]
    )
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_end_to_end_outputs(e2e):
    out, res = e2e
    for name in ("results.json", "results.csv", "results_per_image.csv", "grid.png"):
        assert (out / name).stat().st_size > 0, name
    for metric in ("psnr", "lpips_alex", "lpips_vgg", "dists"):
        assert (out / f"rd_{metric}.png").stat().st_size > 0
    assert res["schema"] == "svi_jax.eval/1"
    assert [r["level"] for r in res["levels"]] == list(range(1, 17))
    assert res["dataset"]["num_images"] == 3 and len(res["images"]) == 3
    assert len(res["checkpoint"]["params_hash"]) == 64
    assert {"jax", "flax", "numpy", "python"} <= set(res["versions"])
    assert res["config"]["model"]["num_slices"] == 16
    for row in res["levels"]:
        assert np.isfinite(row["psnr"]) and 0 <= row["lpips_alex"] and 0 <= row["dists"]
        assert row["ms_ssim"] is None  # 64x96 is below MS-SSIM's 161 px minimum: NaN -> null
    assert any("MS-SSIM" in n for n in res["notes"])
    assert any("FID/KID skipped" in n for n in res["notes"])
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 16
    with open(out / "results_per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 16


def test_rates_increase_and_match_the_estimate(e2e):
    _, res = e2e
    for img in res["images"]:
        bpp = [lvl["bpp"] for lvl in img["levels"]]
        assert all(b > a for a, b in zip(bpp, bpp[1:], strict=False))
        pixels = img["height"] * img["width"]
        for lvl in img["levels"]:
            assert lvl["bpp"] == pytest.approx(8 * lvl["bytes"] / pixels)  # original H×W
            real, est = lvl["bpp_payload"] * pixels, lvl["bpp_est"] * pixels  # bits
            allowance = 0.01 * est + 8 * FLUSH_BYTES * (lvl["level"] + 1)
            assert abs(real - est) <= allowance, (img["name"], lvl["level"], real, est)
        # Level 16 payload: never more than 1% above the estimate (plus the coders' flush);
        # it may be a little below it, because a barely trained model has symbols whose
        # clamped likelihood (1e-9: ~30 bits) costs the range coder only its ~24-bit floor.
        top = img["levels"][-1]
        real, est = top["bpp_payload"] * pixels, top["bpp_est"] * pixels
        assert real <= 1.01 * est + 8 * FLUSH_BYTES * 17, (img["name"], real, est)
        assert real >= 0.9 * est, (img["name"], real, est)


def test_samples_spread_fid_and_prefix_decode(workdir, nets):
    """M = 2 on two levels: per-sample rows, spread, a toy FID/KID, and the batched synthesis
    equal to decoding each level's truncated prefix with the real decoder."""
    source = ev.load_model(str(workdir / "run"))
    dataset = ev.load_dataset(str(workdir / "images"))
    settings = ev.EvalSettings(
        levels=(1, 16), samples=2, grid_images=1, fid_patch_sizes=(32,), kid_subset_size=4
    )

    def toy_features(patches):  # mean colour and 8x8 block means: a stand-in for Inception
        p = patches.astype(np.float64) / 255.0
        blocks = p.reshape(len(p), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(p), -1)
        return np.concatenate([p.mean(axis=(1, 2)), blocks], axis=1)

    output = ev.evaluate(source, dataset, settings, toy_features, progress=False, nets=nets)
    res = output.results
    row = res["images"][0]["levels"][0]
    assert [s["seed"] for s in row["samples"]] == [0, 1]
    assert set(row["spread"]) == set(ev.IMAGE_METRICS)
    assert row["spread"]["psnr"]["min"] <= row["psnr"] <= row["spread"]["psnr"]["max"]
    fid = res["fid_kid"]["32"]
    assert set(fid) == {"1", "16"} and all(np.isfinite(v["fid"]) for v in fid.values())
    # The batched syntheses are what the decoder gives for each truncated file.
    name, image, recs = output.grid[0]
    codec = Codec(source.params, source.config)
    data = codec.compress(image, seed=0)
    for level in (1, 16):
        for seed in (0, 1):
            decoded = codec.decompress(truncate(data, level), seed=seed)
            diff = np.abs(decoded.astype(int) - recs[level, seed].astype(int))
            assert diff.max() <= 1 and diff.mean() < 1e-3, (level, seed, diff.max())


def _run(args, capsys):
    rc = eval_cli.main([*args, "--no-progress"])
    return rc, capsys.readouterr().err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval.py: error: "), err
    return lines[0]


def test_no_flags_without_default_checkpoint(tmp_path, monkeypatch, capsys):
    """The default runs/tiny is looked up in the current directory (as train.py writes it and
    svi-codec reads it), not beside eval.py."""
    monkeypatch.chdir(tmp_path)
    rc, err = _run([], capsys)
    line = _one_line(err)
    assert rc == 1 and "run python train.py first" in line
    assert f"no checkpoint in {tmp_path / 'runs' / 'tiny'} " in line


def test_default_checkpoint_is_found_in_the_current_directory(
    workdir, tmp_path, monkeypatch, capsys
):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny").symlink_to(workdir / "run", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    # --levels 0 fails after the model is loaded: the default checkpoint was found here.
    rc, err = _run(["--levels", "0", "--inception", "none", "--out", str(tmp_path / "e")], capsys)
    assert rc == 1 and _one_line(err) == "eval.py: error: --levels must be in 1..16, got [0]"


@pytest.mark.parametrize("levels", ["9-5", "16-1", "1,8-3", "x"])
def test_bad_level_lists_are_one_line_errors_not_all_levels(levels, capsys):
    rc, err = _run(["--checkpoint", "/nonexistent", "--levels", levels], capsys)
    line = _one_line(err)
    assert rc == 1 and f"bad --levels {levels!r}" in line
    if levels != "x":
        assert "runs backwards" in line
    with pytest.raises(ValueError, match="runs backwards"):
        eval_cli.parse_levels("9-5")  # was range(9, 6): empty, so every level was evaluated
    assert eval_cli.parse_levels("1,4,8-10") == (1, 4, 8, 9, 10)
    assert eval_cli.parse_levels("all") is None


def test_sizes_are_logged_width_x_height(caplog):
    dataset = ev.Dataset(
        "mem", ("tall.png",), lambda i: np.zeros((20, 40, 3), np.uint8), ((20, 40),)
    )
    with caplog.at_level("WARNING"):
        ev.runner.metric_plan(dataset)
    assert "tall.png (40x20 px (W x H)): too small for" in caplog.text


def test_bad_inputs(workdir, tmp_path, capsys):
    ckpt = str(workdir / "run")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = _run(["--checkpoint", ckpt, "--data", str(empty)], capsys)
    assert rc == 1 and "no images" in _one_line(err)
    bad = tmp_path / "bad"
    save_png(bad / "good.png", picture(64, 96, 0))
    (bad / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    rc, err = _run(["--checkpoint", ckpt, "--data", str(bad)], capsys)
    assert rc == 1 and "1 of 2 images" in err and "zz_broken.png" in err.splitlines()[1]
    results = tmp_path / "prev" / "results.json"
    results.parent.mkdir()
    results.write_text("{}")
    rc, err = _run(  # --compare with the file this run would write: refused, kept
        ["--checkpoint", ckpt, "--compare", str(results), "--out", str(results.parent)], capsys
    )
    assert rc == 1 and "is the input file" in _one_line(err) and results.read_text() == "{}"
    for data, out in [
        (bad, bad / "e"),
        (bad, bad),
        (bad, bad / "sub" / "d"),
        (bad / "good.png", bad),
    ]:
        rc, err = _run(["--checkpoint", ckpt, "--data", str(data), "--out", str(out)], capsys)
        assert rc == 1 and "inside the image folder" in _one_line(err) and "--out" in err
    assert sorted(p.name for p in bad.iterdir()) == ["good.png", "zz_broken.png"]
    rc, err = _run(["--checkpoint", str(tmp_path / "nope"), "--data", str(bad)], capsys)
    assert rc == 1 and "not found" in _one_line(err) and "nope" in err
    paper = str(ROOT / "configs" / "paper.py")
    rc, err = _run(["--checkpoint", ckpt, "--config", paper], capsys)
    assert rc == 1 and "another model config" in err and "latent_channels" in _one_line(err)
    rc, err = _run(["--checkpoint", ckpt, "--levels", "0,17"], capsys)
    assert rc == 1 and "--levels must be in 1..16" in _one_line(err)
    rc, err = _run(["--checkpoint", ckpt, "--compare", str(tmp_path / "missing.json")], capsys)
    assert rc == 1 and "missing.json" in _one_line(err)


def test_official_checkpoint_of_another_config(workdir, tmp_path, capsys):
    _, params, _ = svi_jax.weights.export.load_exported_model(workdir / "run")
    state = svi_jax.export_official_state_dict(params)
    np.savez(tmp_path / "tiny_official.npz", **state)
    paper = str(ROOT / "configs" / "paper.py")
    rc, err = _run(
        ["--official-checkpoint", str(tmp_path / "tiny_official.npz"), "--config", paper], capsys
    )
    assert rc == 1 and "does not fit" in err and "paper.py" in _one_line(err)
    rc, err = _run(["--official-checkpoint", str(tmp_path / "tiny_official.npz")], capsys)
    assert rc == 1 and "--config" in _one_line(err)
    # An unreadable file or a folder is not "another config": the import's own line.
    tiny = str(ROOT / "configs" / "tiny.py")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    (tmp_path / "folder.pth").mkdir()
    for name, says in (("notes.pth", "not a PyTorch file"), ("folder.pth", "folder.pth")):
        rc, err = _run(["--official-checkpoint", str(tmp_path / name), "--config", tiny], capsys)
        line = _one_line(err)
        assert rc == 1 and says in line and "another config" not in line, line


def test_compare_loader_and_replot(e2e, tmp_path):
    out, res = e2e
    baseline = {"name": "BPG", "results": {"bpp": [0.2, 0.5, 1.0], "psnr-rgb": [5.0, 5.5, 6.0]}}
    (tmp_path / "bpg.json").write_text(json.dumps(baseline))
    curve = ev.load_curve(tmp_path / "bpg.json")
    assert curve["name"] == "BPG" and curve["curve"]["psnr"] == [5.0, 5.5, 6.0]
    ours = ev.load_curve(out / "results.json")
    assert len(ours["curve"]["bpp"]) == 16
    from svi_jax.evaluation import plots

    rc = plots.main(
        [str(out / "results.json"), "--compare", str(tmp_path / "bpg.json"), "--out", str(tmp_path)]
    )
    assert rc == 0 and (tmp_path / "rd_psnr.png").stat().st_size > 0


@pytest.mark.slow
def test_inception_weights_file_gives_fid_and_kid(workdir, nets, tmp_path, monkeypatch, capsys):
    """--inception with an Inception weights file (pytorch-fid's layout, seeded random values
    here) scores the 299- and 256-px patches; a file that is not one is a one-line error
    before anything is written."""
    from tests import inception_random_weights

    monkeypatch.setattr(ev.runner, "load_metric_networks", lambda: nets)
    weights = tmp_path / "fid_inception.npz"
    np.savez(weights, **inception_random_weights.reference_state_dict())
    for i in range(2):
        save_png(tmp_path / "big" / f"b{i}.png", picture(300, 300, 10 + i))
    common = ["--checkpoint", str(workdir / "run"), "--data", str(tmp_path / "big")]
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    rc, err = _run([*common, "--inception", str(junk), "--out", str(tmp_path / "bad")], capsys)
    assert rc == 1 and "junk.pth" in _one_line(err)
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "out"
    rc, err = _run(
        [*common, "--levels", "8,16", "--inception", str(weights), "--out", str(out)], capsys
    )
    assert rc == 0, err
    results = json.loads((out / "results.json").read_text())
    # 2 patches for 2048-d features: scored, but flagged in results.json and on the console.
    assert any("FID/KID at 299 px from only 2 patches" in note for note in results["notes"])
    assert "from only 2 patches" in err
    network = results["settings"]["fid_network"]
    assert "InceptionV3" in network["network"] and len(network["sha256"]) == 64
    for patch in ("299", "256"):
        scores = results["fid_kid"][patch]
        assert sorted(scores) == ["16", "8"]
        for row in scores.values():
            assert row["num_patches"] == 2  # one grid patch per 300-px image, no shifted grid
            assert row["too_few_patches"] and row["feature_dim"] == 2048
            assert np.isfinite(row["fid"]) and row["fid"] > -1e-6
            assert np.isfinite(row["kid_mean"]) and np.isfinite(row["kid_std"])
    assert all(np.isfinite(row["fid_299"]) for row in results["levels"])
    assert (out / "rd_fid_299.png").is_file() and (out / "rd_kid_256_mean.png").is_file()


def test_plot_titles_and_labels():
    from svi_jax.evaluation import plots

    def results(source):
        return {"dataset": {"source": source, "num_images": 3}}

    assert plots._title(results("/data/sets/kodak/")) == "kodak (3 images)"
    assert plots._title(results("tfds:clic/2020:test")) == "tfds:clic/2020:test (3 images)"
    long = plots._title(results("x" * 60))
    assert long.startswith("…") and len(long) == 40 + len(" (3 images)")
    assert plots._label("fid_299") == "FID, 299-px patches ↓"
    assert plots._label("kid_256_mean") == "KID, 256-px patches ↓"
    assert plots._label("psnr") == "PSNR (dB) ↑"


def test_inception_weights_are_found_where_pytorch_fid_keeps_them(tmp_path, monkeypatch):
    monkeypatch.delenv("SVI_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert ev.find_inception_weights() is None
    cached = tmp_path / "torch" / "hub" / "checkpoints" / ev.FID_WEIGHTS_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert ev.find_inception_weights() == cached
    monkeypatch.setenv("SVI_INCEPTION_WEIGHTS", str(tmp_path / "elsewhere.pth"))
    assert ev.find_inception_weights() == tmp_path / "elsewhere.pth"  # explicit wins


def test_images_too_small_for_a_metric_are_evaluated_without_it(workdir, nets, tmp_path, capsys):
    """A 12x40 sliver beside a 64x96 image: both coded and scored for rate and PSNR, the
    sliver's LPIPS/DISTS/MS-SSIM marked unavailable in results.json; nothing aborts."""
    data = tmp_path / "mixed"
    save_png(data / "a_ok.png", picture(64, 96, 0))
    save_png(data / "b_sliver.png", picture(12, 40, 1))
    settings = ev.EvalSettings(levels=(1, 16))
    results = ev.run_evaluation(
        ev.load_model(str(workdir / "run")),
        ev.load_dataset(str(data)),
        tmp_path / "out",
        settings,
        progress=False,
        nets=nets,
    )
    ok, sliver = results["images"]
    assert set(ok["unavailable"]) == {"ms_ssim", "ms_ssim_db"}  # 5-scale MS-SSIM: 161 px
    assert np.isfinite(ok["levels"][0]["dists"]) and np.isfinite(ok["levels"][0]["lpips_alex"])
    assert set(sliver["unavailable"]) == {
        "ms_ssim",
        "ms_ssim_db",
        "lpips_alex",
        "lpips_vgg",
        "dists",
    }
    assert "needs 16 px" in sliver["unavailable"]["dists"]
    for row in sliver["levels"]:
        assert row["bpp"] > 0 and np.isfinite(row["psnr"]) and np.isnan(row["dists"])
    assert any("too small for some metrics" in n for n in results["notes"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["images"][1]["unavailable"]["lpips_alex"] == "needs 31 px sides"
