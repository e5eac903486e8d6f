"""One training step of each phase on configs/tiny.py (warming, GAN; main: test_train.py)."""

from __future__ import annotations

import json
import math
import pathlib

import chex
import jax
import numpy as np
import pytest
from conftest import use_test_compilation_cache

from svi_jax.configs import tiny
from svi_jax.tracing import trace_count
from svi_jax.training import steps, train_and_evaluate
from svi_jax.weights.export import load_exported_model

use_test_compilation_cache()


def one_step_config(phase, **train):
    cfg = tiny.get_config()  # 64 px crops, batch 2, M = 1 (the embedded default's settings)
    cfg.phase = phase
    cfg.data.val_crop = 64
    cfg.train.update(num_steps=1, log_every=1, checkpoint_every=1, eval_every=-1, image_every=0)
    cfg.train.update(**train)
    return cfg


def train_records(workdir):
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def test_warming_one_step(tmp_path):
    before = trace_count(steps.step_trace_name("warming"))
    result = train_and_evaluate(one_step_config("warming"), tmp_path)
    (record,) = train_records(tmp_path)
    assert math.isfinite(record["loss"]) and record["level"] == 16
    assert {"bpp_y_splits_min", "bpp_y", "bpp_z", "aux_loss"} <= set(record)
    assert "synonym_distance" not in record  # no re-encoding in warming
    assert trace_count(steps.step_trace_name("warming")) == before + 1
    assert result["step"] == 1 and (tmp_path / "checkpoints" / "1").exists()


@pytest.mark.slow
def test_gan_phase_starts_from_previous_phase_and_steps(tmp_path):
    main_dir = tmp_path / "main"
    train_and_evaluate(one_step_config("warming"), main_dir)  # stands for the previous phase
    _, previous, _ = load_exported_model(main_dir)
    gan_dir = tmp_path / "gan"
    train_and_evaluate(one_step_config("gan", num_steps=0, init_from=str(main_dir)), gan_dir)
    _, start, _ = load_exported_model(gan_dir)
    chex.assert_trees_all_equal(previous, start)
    train_and_evaluate(one_step_config("gan", init_from=str(main_dir)), gan_dir)
    (record,) = train_records(gan_dir)
    for key in ("loss", "d_loss", "g_syntactic", "g_samples", "d_grad_norm"):
        assert math.isfinite(record[key]), key
    _, after, _ = load_exported_model(gan_dir)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(start), jax.tree_util.tree_leaves(after), strict=True
        )
    ]
    assert all(changed)


def test_discriminator_sees_only_the_transmitted_slices():
    from svi_jax.nn.discriminator import ConditionalPatchDiscriminator

    disc = ConditionalPatchDiscriminator(num_slices=4, slice_width=2, widths=(8, 8, 8, 8))
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 64, 64, 3))
    y = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 4, 8))
    variables = disc.init(jax.random.PRNGKey(2), x, y, 1)
    apply = jax.jit(lambda y, level: disc.apply(variables, x, y, level))
    assert apply(y, 1).shape == (1, 4, 4, 1)  # 70x70-style patch logits at 1/16 resolution
    y_other = y.at[..., 4:].set(7.0)  # channels of slices 3 and 4
    np.testing.assert_array_equal(apply(y, 2), apply(y_other, 2))
    assert not np.array_equal(apply(y, 3), apply(y_other, 3))
    _, updated = disc.apply(variables, x, y, 2, True, mutable=["batch_stats"])
    changed = jax.tree_util.tree_map(
        lambda a, b: not np.array_equal(a, b), variables["batch_stats"], updated["batch_stats"]
    )
    assert all(jax.tree_util.tree_leaves(changed))  # power iteration advanced on a D step


def test_phase_steps_are_logged_and_a_stale_later_phase_says_so(tmp_path, caplog):
    """A warming,main run logs each phase's step count and the flag that sets it; extending
    warming after main finished warns that main (resumed from its own checkpoint) does not
    use the new warming steps, and how to retrain it."""
    import logging

    from test_train import machinery_config

    cfg = machinery_config(num_steps=1, checkpoint_every=1)
    cfg.phase = "warming,main"
    cfg.phase_overrides.warming = {"train": {"num_steps": 1}}
    with caplog.at_level(logging.INFO, logger="svi_jax"):
        train_and_evaluate(cfg, tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "steps: warming 1 (--config.phase_overrides.warming.train.num_steps), "
        "main 1 (--config.train.num_steps)"
    ) in messages
    assert not [m for m in messages if "does not use" in m]  # main started from warming
    caplog.clear()
    cfg.phase_overrides.warming.train.num_steps = 2
    with caplog.at_level(logging.INFO, logger="svi_jax"):
        result = train_and_evaluate(cfg, tmp_path)
    assert result["phases"]["warming"]["step"] == 2 and result["phases"]["main"]["step"] == 1
    stale = [r.getMessage() for r in caplog.records if "does not use" in r.getMessage()]
    assert len(stale) == 1, stale
    assert "main resumes its own checkpoint (step 1) and is already complete" in stale[0]
    assert "warming steps 2-2 trained in this run" in stale[0]
    assert f"move {tmp_path / 'main'} aside" in stale[0]
