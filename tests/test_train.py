"""Training loop: optimiser partition, schedule, embedded default end to end, resume, NaN, bad data.

Compilations dominate the cost on CPU, so the tests share a persistent XLA cache
(SVI_TEST_JAX_CACHE, default <tmp>/svi_jax_test_cache) and the loop tests use a shallow
variant of configs/tiny.py (one Swin block per stage; the loop does not depend on depth).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TEST_CACHE, use_test_compilation_cache

import svi_jax
from svi_jax.configs import demo, tiny
from svi_jax.data.image_io import DataError
from svi_jax.training import TrainingDivergedError, loop, optim, steps, train_and_evaluate
from svi_jax.weights.export import load_exported_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
use_test_compilation_cache()


def machinery_config(**train):
    """configs/tiny.py with one Swin block per stage, 64 px crops, batch 2, M = 1."""
    cfg = tiny.get_config()
    cfg.model.analysis_depths = (1, 1, 1, 1)
    cfg.model.synthesis_depths = (1, 1, 1, 1)
    cfg.data.val_crop = 64
    fields = dict(num_steps=4, log_every=1, checkpoint_every=2, eval_every=-1, image_every=0)
    cfg.train.update({**fields, **train})
    return cfg


def train_losses(workdir) -> dict[int, float]:
    """{step: train loss} from metrics.jsonl (the last record of a step wins)."""
    out = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["split"] == "train":
            out[r["step"]] = r["loss"]
    return out


def test_level_schedule_cycles_16_to_1():
    levels = [int(steps.level_at(jnp.int32(k), 16)) for k in range(34)]
    assert levels[:16] == list(range(16, 0, -1)) and levels[16:18] == [16, 15]


def test_every_leaf_is_updated_by_exactly_one_optimizer():
    cfg = tiny.get_config()
    model = svi_jax.build_model(cfg.model)
    shapes = jax.eval_shape(lambda: svi_jax.init_params(model, jax.random.PRNGKey(0)))
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(0)  # any values: only the partition is under test
    params = treedef.unflatten([rng.standard_normal(s.shape, np.float32) for s in leaves])
    aux_grads = jax.jit(jax.grad(lambda p: svi_jax.aux_loss(model, p)))(params)
    main_grads = jax.tree_util.tree_map(jnp.ones_like, params)  # stands for any main gradient
    _, labels = optim.make_optimizer(cfg, params, "main")
    grads = optim.combine_grads(labels, main_grads, aux_grads)
    flat_labels = jax.tree_util.tree_leaves(labels)
    assert flat_labels.count(optim.AUX) == 1  # the quantiles
    assert jax.tree_util.tree_leaves(aux_grads)[flat_labels.index(optim.AUX)].any()

    def nonzero_updates(keep):
        parts = {
            optim.MODEL: optim.model_optimizer(cfg, "main"),
            optim.AUX: optax.adamw(cfg.optim.aux_lr, weight_decay=cfg.optim.aux_weight_decay),
        }
        parts = {k: (v if k == keep else optax.set_to_zero()) for k, v in parts.items()}
        tx = optax.multi_transform(parts, labels)
        updates, _ = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
        return [bool(np.any(np.asarray(u) != 0)) for u in jax.tree_util.tree_leaves(updates)]

    from_model, from_aux = nonzero_updates(optim.MODEL), nonzero_updates(optim.AUX)
    for lab, m, a in zip(flat_labels, from_model, from_aux, strict=True):
        assert m != a, "a leaf is updated by both optimisers or by none"
        assert a == (lab == optim.AUX)


def test_bad_data_folder_raises_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    cfg = machinery_config()
    cfg.data.train, cfg.data.val = str(tmp_path / "empty"), str(tmp_path)
    with pytest.raises(DataError, match="empty"):
        train_and_evaluate(cfg, tmp_path / "run")
    cfg.data.train = str(tmp_path / "missing")
    with pytest.raises(DataError, match="missing"):
        train_and_evaluate(cfg, tmp_path / "run")


@pytest.mark.slow
def test_embedded_default_end_to_end(tmp_path):
    """`python train.py` (the embedded default: warming then main) with reduced step counts."""
    workdir = tmp_path / "tiny"
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=TEST_CACHE)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    args = ["--config.train.num_steps=3", "--config.train.checkpoint_every=2"]
    args += ["--config.train.image_every=3", "--config.train.eval_every=0"]
    args += ["--config.train.log_every=1", "--config.data.crop_size=64"]
    args += ["--config.phase_overrides.warming.train.num_steps=2"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--workdir={workdir}", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PSNR@1/8/16" in proc.stdout and "checkpoints:" in proc.stdout
    assert "warming: step 2:" in proc.stdout and "main: step 3:" in proc.stdout
    # one compilation per phase for all levels; progress bars over both phases
    assert proc.stderr.count("tracing the warming step") == 1
    assert proc.stderr.count("tracing the main step") == 1
    assert "warming 1/2" in proc.stderr and "main 2/2" in proc.stderr
    main = workdir / "main"
    assert sorted(p.name for p in (main / "checkpoints").iterdir() if p.name.isdigit()) == [
        "2",
        "3",
    ]
    assert (main / "checkpoints" / "config.json").exists()
    assert list((main / "tensorboard").glob("events.out.tfevents.*"))
    assert list((main / "images").glob("*.png"))
    records = [json.loads(x) for x in (main / "metrics.jsonl").read_text().splitlines()]
    assert [r["level"] for r in records if r["split"] == "train"] == [16, 15, 14]
    assert {r["level"] for r in records if r["split"] == "val" and "level" in r} == set(
        range(1, 17)
    )
    warming_config, _, _ = load_exported_model(workdir / "warming")
    main_config, _, _ = load_exported_model(main)
    assert warming_config.phase == "warming" and warming_config.train.num_steps == 2
    assert main_config.phase == "main" and main_config.train.init_from == str(
        workdir / "warming" / "export"
    )
    config, params, digest = load_exported_model(workdir)  # where eval.py looks by default
    assert config.phase == "main" and digest == load_exported_model(main)[2]
    assert digest != load_exported_model(workdir / "warming")[2]


class _InterruptingLoader:
    """Wraps a loader; batch number `at` (0-based) raises KeyboardInterrupt or is all NaN."""

    def __init__(self, loader, at, mode):
        self.loader, self.at, self.mode, self.count = loader, at, mode, 0

    def __next__(self):
        batch = next(self.loader)
        self.count += 1
        if self.count - 1 == self.at:
            if self.mode == "kill":
                raise KeyboardInterrupt("simulated kill")
            batch = np.full_like(batch, np.nan)
        return batch

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _patch_loader(monkeypatch, at, mode):
    real = loop.make_loader
    monkeypatch.setattr(
        loop, "make_loader", lambda *a, **k: _InterruptingLoader(real(*a, **k), at, mode)
    )


def test_kill_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    cfg = machinery_config()
    train_and_evaluate(cfg, tmp_path / "straight")
    _patch_loader(monkeypatch, at=3, mode="kill")  # dies in step 4, after the step-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(cfg, tmp_path / "resumed")
    monkeypatch.undo()
    train_and_evaluate(cfg, tmp_path / "resumed")
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]
    np.testing.assert_allclose(
        [resumed[k] for k in range(1, 5)], [straight[k] for k in range(1, 5)], rtol=1e-6
    )
    _, p1, _ = load_exported_model(tmp_path / "straight")
    _, p2, _ = load_exported_model(tmp_path / "resumed")
    chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
    # A third run of the finished workdir trains nothing and says so (no "train loss nan").
    again = train_and_evaluate(cfg, tmp_path / "resumed")
    assert again["step"] == 4 and again["summary"].startswith("already complete at step 4")
    assert "nan" not in again["summary"]


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, monkeypatch):
    """NaN in step 3 is noticed at the next host step (4) and reported as step 3 of 3-4."""
    _patch_loader(monkeypatch, at=2, mode="nan")  # step 3 sees a NaN batch
    cfg = machinery_config(log_every=4)  # host steps: 2 (checkpoint) and 4 (log)
    with pytest.raises(TrainingDivergedError) as info:
        train_and_evaluate(cfg, tmp_path / "run")
    message = str(info.value)
    assert message.startswith("loss is nan") and " at step 3 (level 14;" in message, message
    assert "first non-finite step of steps 3-4" in message, message
    assert re.search(r"Last good checkpoint: .*checkpoints/2$", message), message
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == ["2"]


class _BatchCounter:
    """Wraps a loader; `count` is the number of batches (= steps) handed out so far."""

    def __init__(self, loader):
        self.loader, self.count = loader, 0

    def __next__(self):
        self.count += 1
        return next(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def test_metrics_reach_the_host_only_at_host_steps(tmp_path, monkeypatch):
    """Deterministic proxy for "no host sync per step": every device-to-host read (explicit
    jax.device_get, or float/int/bool/np.asarray/item of a jax.Array) is recorded with the
    number of steps dispatched so far; only log/checkpoint steps (3, 6) may read."""
    counters, events = [], []
    real_make_loader = loop.make_loader

    def make_loader(*args, **kwargs):
        counters.append(_BatchCounter(real_make_loader(*args, **kwargs)))
        return counters[-1]

    def recorded(fn):
        def wrapper(*args, **kwargs):
            events.append(counters[-1].count if counters else -1)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(loop, "make_loader", make_loader)
    monkeypatch.setattr(jax, "device_get", recorded(jax.device_get))
    array_type = type(jnp.zeros(()))
    for name in ("__float__", "__int__", "__bool__", "__index__", "__array__", "item", "tolist"):
        monkeypatch.setattr(array_type, name, recorded(getattr(array_type, name)))
    cfg = machinery_config(num_steps=6, log_every=3, checkpoint_every=0)
    train_and_evaluate(cfg, tmp_path / "run")
    monkeypatch.undo()
    during_training = {e for e in events if 0 < e}
    assert during_training and during_training <= {3, 6}, sorted(set(events))
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [3, 6]
    assert all(r["steps_per_s"] > 0 and r["images_per_s"] == 2 * r["steps_per_s"] for r in train)


def test_profile_steps_write_a_trace(tmp_path):
    train_and_evaluate(machinery_config(num_steps=3, profile_steps=1), tmp_path / "run")
    assert list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))


def test_learning_rate_schedule_warms_up_then_decays_over_the_phase():
    """optim.warmup_steps then optim.cosine_decay (demo only): lr/warmup -> lr at the end of the
    warm-up, a cosine to final_lr_fraction * lr at the phase's train.num_steps; constant when
    cosine_decay is off (official)."""
    cfg = loop.phase_config(demo.get_config(), "warming")
    lr, warmup, total = cfg.optim.warming_lr, cfg.optim.warmup_steps, cfg.train.num_steps
    schedule = optim._schedule(cfg, lr)
    np.testing.assert_allclose(float(schedule(0)), lr / warmup, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(warmup)), lr, rtol=1e-5)
    middle = (warmup + total) // 2
    np.testing.assert_allclose(float(schedule(middle)), lr * (1 + 0.1) / 2, rtol=1e-2)
    np.testing.assert_allclose(float(schedule(total)), 0.1 * lr, rtol=1e-5)
    cfg.optim.cosine_decay = False
    np.testing.assert_allclose(float(optim._schedule(cfg, lr)(total)), lr, rtol=1e-6)
    cfg.optim.warmup_steps = 0
    assert optim._schedule(cfg, lr) == lr  # official: a constant
