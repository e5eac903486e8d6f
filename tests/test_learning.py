"""The model learns, and a model that ignores its latent is caught.

* A short deterministic warming run (the embedded default's model and recipe, configs/demo.py,
  its learning-rate schedule scaled to NUM_STEPS) on seeded random 64-px crops of the default
  training photos, from several seeds: on two fixed centre crops the reconstruction PSNR rises
  by LEARN_DB and the decoder's output depends on y_hat (decoding the other crop's latent is
  SWAP_DB worse). The same run with the official g_s output init collapses to a latent-free
  output on COLLAPSING_SEED, and the check fails on it.
* rd_*.png axes leave room around a flat curve; eval.py warns when every level's PSNR is
  within 0.1 dB (the model ignores its latent).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import use_test_compilation_cache

import eval as eval_cli
from svi_jax.configs import demo
from svi_jax.data.image_io import skimage_photos
from svi_jax.evaluation import plots
from svi_jax.forward import bound_apply, encode_latents
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.metrics.pixelwise import psnr_from_mse
from svi_jax.nn.model import ProgressiveSIC, build_model
from svi_jax.training import loop, steps

use_test_compilation_cache()

PHOTOS = ("chelsea", "motorcycle")  # centre crops checked (training photos of the default split)
TRAIN_PHOTOS = ("chelsea", "hubble_deep_field", "motorcycle")  # the default training split
BATCH = 2
CROP = 64
NUM_STEPS = 150
WARMUP_STEPS = 60  # the demo's linear warm-up and cosine decay, scaled to the short run
SEEDS = (0, 1, 2)  # init, noise and crop seeds: the recipe must learn from each
# Measured on CPU after 150 steps of random 64-px crops of the training photos, on the two
# centre crops, with the flat-draw init (svi_jax/nn/initializers.py), 2026-12-01: the demo
# recipe (0.45 output bias) on seeds 0/1/2/3/4 gains (mean of the crops)
#   jax 0.10.2: 3.35/3.96/4.82/5.46/5.34 dB, a swap costs at least 2.33/2.66/2.31/2.82/3.05 dB;
#   jax 0.11.2: 2.92/5.78/4.75/5.50/5.47 dB,                         1.34/2.92/2.26/2.80/3.16 dB
# (a 150-step run is chaotic: XLA's rounding differs between the versions and seed 0's
# motorcycle crop gains 2.65 dB on one, 1.76 dB on the other). A run that does not learn gains
# ~0 dB: LEARN_DB sits 0.9 dB under the least mean gain measured. From the official output
# init seed 2 collapses to a latent-free output on both versions (swap 0.00 dB; gains
# +0.55/+0.35 dB on jax 0.10.2, +7.04/+3.98 dB on 0.11.2: the mean colour): SWAP_DB catches
# it whatever the gain, halfway between a collapse (0.00) and the least learned dependence
# measured (1.34). Seed 0 from the official init half-collapses (swaps 1.58/0.63 dB, both).
# With a 30-step warm-up seed 1 collapsed too (swap 0.00 dB): the warm-up is part of the fix.
LEARN_DB = 2.0  # least mean PSNR gain of the crops over the run
SWAP_DB = 0.7  # least PSNR loss of each crop decoded from the other crop's latent
COLLAPSING_SEED = 2  # a seed on which the official output init collapses


def centre_crops() -> jax.Array:
    """The fixed validation crops: (2, CROP, CROP, 3) float32 in [0, 1]."""
    out = []
    for _, image in skimage_photos(PHOTOS):
        h, w = image.shape[:2]
        top, left = (h - CROP) // 2, (w - CROP) // 2
        out.append(image[top : top + CROP, left : left + CROP].astype(np.float32) / 255.0)
    return jnp.asarray(np.stack(out))


def training_batches(seed: int, num: int) -> list[jax.Array]:
    """`num` batches of BATCH random CROP-px crops of the default training photos, drawn from
    numpy's generator seeded with `seed` (as the demo trains: random crops, not fixed ones)."""
    photos = [image for _, image in skimage_photos(TRAIN_PHOTOS)]
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num):
        crops = []
        for _ in range(BATCH):
            image = photos[rng.integers(len(photos))]
            top = rng.integers(image.shape[0] - CROP + 1)
            left = rng.integers(image.shape[1] - CROP + 1)
            crops.append(image[top : top + CROP, left : left + CROP])
        batches.append(jnp.asarray(np.stack(crops).astype(np.float32) / 255.0))
    return batches


@functools.partial(jax.jit, static_argnums=0)
def _own_and_swapped(model, params, x):
    apply = bound_apply(model, params)
    y_hat = encode_latents(model, params, x).y_hat
    psnr = lambda x_hat: psnr_from_mse(jnp.mean((x_hat - x) ** 2, axis=(1, 2, 3)))
    own = apply(ProgressiveSIC.synthesis, y_hat)
    swapped = apply(ProgressiveSIC.synthesis, y_hat[::-1])
    return psnr(own), psnr(swapped)


def reconstruction_psnr(model, params, x) -> tuple[np.ndarray, np.ndarray]:
    """(PSNR of each crop decoded from its own y_hat, from the other crop's y_hat), in dB."""
    return tuple(np.asarray(v) for v in jax.device_get(_own_and_swapped(model, params, x)))


def learning_failures(before, after) -> list[str]:
    """What a learning run lacks: [] when the crops gained LEARN_DB on average and each depends
    on its own latent by SWAP_DB."""
    (own0, _), (own1, swapped1) = before, after
    failures = []
    if np.mean(own1 - own0) < LEARN_DB:
        failures.append(f"PSNR rose by {np.round(own1 - own0, 2)} dB (mean < {LEARN_DB})")
    if np.any(own1 - swapped1 < SWAP_DB):
        failures.append(
            f"decoding the other crop's latent costs only {np.round(own1 - swapped1, 2)} dB "
            f"(< {SWAP_DB}): the decoder ignores y_hat"
        )
    return failures


def demo_warming_config(output_bias_init: float) -> ml_collections.ConfigDict:
    """The demo's warming phase with its learning-rate schedule scaled to NUM_STEPS."""
    cfg = loop.phase_config(demo.get_config(), "warming")
    cfg.train.output_bias_init = output_bias_init
    cfg.train.num_steps = NUM_STEPS  # the cosine decay ends with the run
    cfg.optim.warmup_steps = WARMUP_STEPS
    return cfg


@functools.cache
def _step_and_model():
    # output_bias_init only changes the initial parameters: one step function serves all runs
    cfg = demo_warming_config(-1.0)
    model = build_model(cfg.model)
    return jax.jit(steps.make_step_fn(cfg, model, load_lpips_params("alex"))), model


def warming_run(output_bias_init: float, seed: int):
    """NUM_STEPS of the demo's warming phase on random training crops; (before, after) PSNRs
    of the fixed centre crops."""
    cfg = demo_warming_config(output_bias_init)
    step, model = _step_and_model()
    x = centre_crops()
    state = steps.init_state(cfg, model, jax.random.PRNGKey(seed))
    before = reconstruction_psnr(model, state["params"], x)
    for batch in training_batches(seed, NUM_STEPS):
        state, _ = step(state, batch)
    return before, reconstruction_psnr(model, state["params"], x)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_demo_recipe_learns_and_uses_its_latent(seed):
    before, after = warming_run(demo.get_config().train.output_bias_init, seed)
    assert not learning_failures(before, after), (before, after)


@pytest.mark.slow
def test_official_output_init_collapses_and_the_check_catches_it():
    """Today's collapse: from PyTorch's default g_s output init the decoder learns the mean
    colour and stops depending on y_hat; the learning check must reject that run."""
    before, after = warming_run(-1.0, COLLAPSING_SEED)
    failures = learning_failures(before, after)
    assert any("ignores y_hat" in f for f in failures), (before, after)


def _results(psnr: list[float]) -> dict:
    levels = [
        {"level": i + 1, "bpp": 0.1 * (i + 1), "bpp_est": 0.1 * (i + 1), "psnr": p}
        for i, p in enumerate(psnr)
    ]
    return {
        "name": "m",
        "levels": levels,
        "metrics": ["psnr"],
        "dataset": {"source": "skimage", "num_images": 3},
    }


def test_rd_axis_shows_a_flat_curve_as_flat():
    flat = [12.41 + 0.002 * i for i in range(16)]  # the collapsed demo's curve
    fig = plots.metric_figure(_results(flat), "psnr", [])
    bottom, top = fig.axes[0].get_ylim()
    assert bottom <= min(flat) - 0.5 and top >= max(flat) + 0.5
    rising = [20.0 + i for i in range(16)]  # a working curve keeps its own range
    fig = plots.metric_figure(_results(rising), "psnr", [])
    bottom, top = fig.axes[0].get_ylim()
    assert min(rising) - 1.0 < bottom <= min(rising) - 0.5 and top < max(rising) + 1.0


def test_eval_warns_when_the_latent_is_ignored():
    flat = _results([12.41 + 0.005 * i for i in range(16)])["levels"]
    warning = eval_cli.flat_curve_warning(flat)
    assert warning and "ignores its latent" in warning and "12.41-12.48" in warning
    assert (
        eval_cli.flat_curve_warning(_results([20.0 + 0.3 * i for i in range(16)])["levels"]) is None
    )
    assert eval_cli.flat_curve_warning(_results([12.4])["levels"]) is None  # one level: no curve
