"""The SVI objective (MODEL.md §4) and the warming loss, on top of `svi_jax.forward`.

L = w_syn * [lambda_16 MSE(x, x_syn) + gamma_16 LPIPS(x, x_syn) + beta_16 (bpp_y + bpp_z)]
  + w_sem * [lambda_l E_j MSE(x, x_j) + gamma_l E_j LPIPS(x, x_j) + beta_l (bpp_ys + bpp_z)]
  + synonym_distance + sample_distance  [+ 64 std_s(bpp_s) - 4 bpp_{slice l}]
with lambda_l = 128 l, gamma_l = 2^(5 - l/8), beta_l = 2^(6 - 3l/8).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from svi_jax.forward import (
    TrainNoise,
    bound_apply,
    encode_latents,
    rate_terms,
    train_forward,
)
from svi_jax.input_checks import check_images, check_level, latent_shapes
from svi_jax.metrics.lpips import lpips_distance
from svi_jax.nn.entropy_models import gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC


def level_weights(loss_config: ml_collections.ConfigDict, level: jax.Array, num_slices: int):
    """(lambda_l, gamma_l, beta_l), float32 scalars, for a level in 1..num_slices (MODEL.md §4:
    128 l, 2^(5 - l/8), 2^(6 - 3l/8) with the paper's loss config).

    level: scalar int (Python, numpy or JAX; traced under jit). num_slices: the model's S
    (model.num_slices; required, so a model with S != 16 is never checked against 1..16).
    Raises TypeError / ValueError for a non-integer or non-scalar level or a concrete one
    outside 1..num_slices. A traced level's value is not checked: outside 1..S the formulas
    extrapolate (finite nonsense).
    """
    check_level(level, num_slices)
    lv = jnp.asarray(level, jnp.float32)
    lam = loss_config.mse_scale * lv
    gamma = 2.0 ** (loss_config.lpips_log2_offset - lv / 8.0)
    beta = 2.0 ** (loss_config.rate_log2_offset - 3.0 * lv / 8.0)
    return lam, gamma, beta


def _mse(a, b):
    return jnp.mean((a - b) ** 2)


def svi_loss(
    model: ProgressiveSIC,
    params: dict,
    lpips_params: dict,
    x: jax.Array,
    level: jax.Array,
    noise: TrainNoise,
    loss_config: ml_collections.ConfigDict,
    lpips_masks: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, dict]:
    """The SVI loss (MODEL.md §4) of one batch at `level`: (loss, metrics), float32 scalars.

    x: (B, H, W, 3) float in [0, 1] (float32 or bfloat16), H and W multiples of 64 (pad with
    `svi_jax.pad_to_multiple`); level: scalar int in 1..S, S = model.num_slices (16); noise:
    `draw_train_noise(model, rng, x.shape, M)` with M >= 1. The loss is in the paper's units:
    weighted MSE of [0, 1] pixels + weighted LPIPS + weighted rates in bits per pixel; metrics
    hold each term under the official names (bpp_* in bits per pixel).
    lpips_masks: optional LPIPS head keep-masks for the official train-mode dropout, one per
    LPIPS layer, for the stacked batch [x_syn; x_samples] ((1 + M) * B rows).

    Raises ValueError / TypeError (at trace time) for bad images, a non-integer, non-scalar
    or (concrete) out-of-range level, noise drawn for another batch, image size or M < 1,
    and (TypeError) noise that is not a TrainNoise (`train_forward`). Under jit the level is
    data (one compilation for all levels): a traced level's value is not checked, and
    outside 1..S the loss is finite nonsense or NaN
    (`svi_jax.input_checks.TRACED_LEVEL_CONTRACT`).
    """
    out = train_forward(model, params, x, level, noise)
    return svi_loss_from_outputs(model, lpips_params, x, level, out, loss_config, lpips_masks)


def svi_loss_from_outputs(
    model: ProgressiveSIC,
    lpips_params: dict,
    x: jax.Array,
    level: jax.Array,
    out: dict,
    loss_config: ml_collections.ConfigDict,
    lpips_masks: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, dict]:
    """The SVI loss of given `train_forward` outputs (lets a caller reuse one forward pass,
    e.g. the GAN phase, which also feeds the reconstructions to its discriminator). Same
    arguments, units and level contract as `svi_loss`."""
    check_level(level, model.num_slices)
    b = x.shape[0]
    num_samples = out["x_hat_samples"].shape[0] // b
    x_rep = jnp.tile(x, (1 + num_samples, 1, 1, 1))
    x_all = jnp.concatenate([out["x_hat_syn"], out["x_hat_samples"]], axis=0)
    policy = {"dtype": model.dtype, "precision": model.precision}  # LPIPS follows the model
    lp = lpips_distance(lpips_params, x_rep, x_all, "alex", lpips_masks, **policy)
    r = out["rates"]
    metrics = {
        "mse_syntactic": _mse(x, out["x_hat_syn"]),
        "lpips_syntactic": jnp.mean(lp[:b]),
        "Emse_loss": _mse(x_rep[b:], out["x_hat_samples"]),
        "Elpips_semantic": jnp.mean(lp[b:]),
        "synonym_distance": out["synonym_distance"],
        "sample_distance": out["sample_distance"],
        "bpp_y": r.bpp_y,
        "bpp_ys": r.bpp_ys,
        "bpp_z": r.bpp_z,
        "bpp_y_splits_std": r.bpp_y_splits_std,
        "bpp_y_splits_chunk": r.bpp_y_splits_chunk,
    }
    lam16, gam16, beta16 = level_weights(loss_config, model.num_slices, model.num_slices)
    lam, gam, beta = level_weights(loss_config, level, model.num_slices)
    syntactic = (
        lam16 * metrics["mse_syntactic"]
        + gam16 * metrics["lpips_syntactic"]
        + beta16 * (r.bpp_y + r.bpp_z)
    )
    synonymous = (
        lam * metrics["Emse_loss"] + gam * metrics["Elpips_semantic"] + beta * (r.bpp_ys + r.bpp_z)
    )
    loss = (
        loss_config.syntactic_weight * syntactic
        + loss_config.synonymous_weight * synonymous
        + out["synonym_distance"]
        + out["sample_distance"]
    )
    if loss_config.balance_rate:
        loss = loss + (
            loss_config.balance_std_weight * r.bpp_y_splits_std
            - loss_config.balance_chunk_weight * r.bpp_y_splits_chunk
        )
    metrics.update(loss=loss, loss_syntactic=syntactic, loss_synonymous=synonymous)
    return loss, metrics


def warming_loss(
    model: ProgressiveSIC,
    params: dict,
    lpips_params: dict,
    x: jax.Array,
    noise_y: jax.Array,
    noise_z: jax.Array,
) -> tuple[jax.Array, dict]:
    """Warming (MODEL.md §4): 2048 MSE + 8 LPIPS + (std_s - min_s)(bpp_s) + bpp_y + bpp_z.

    No sampling, no re-encoding; the per-slice rates use the noisy likelihoods, as the official
    `warming` does. x: (B, H, W, 3) float in [0, 1], H and W multiples of 64; noise_y: U[-1/2,
    1/2) of y's shape (B, H/16, W/16, C), noise_z of z's (B, H/64, W/64, Cz) (the y and z of
    `draw_train_noise`). Returns (loss, metrics), float32 scalars (rates in bits per pixel).

    Raises ValueError / TypeError for bad images (`check_images`) or noise of other shapes.
    """
    check_images(x)
    y_shape, z_shape = latent_shapes(model, x.shape)
    if tuple(noise_y.shape) != y_shape or tuple(noise_z.shape) != z_shape:
        raise ValueError(
            f"noise_y {tuple(noise_y.shape)} / noise_z {tuple(noise_z.shape)} do not fit x "
            f"{tuple(x.shape)}: it needs y noise {y_shape} and z noise {z_shape} (the y and z "
            "of draw_train_noise(model, rng, x.shape, num_samples))"
        )
    apply = bound_apply(model, params)
    b, h, w, _ = x.shape
    lat = encode_latents(model, params, x)
    z_lik = apply(ProgressiveSIC.z_likelihood, lat.z + noise_z)
    y_lik = gaussian_likelihood(lat.y + noise_y, lat.means, lat.scales)
    r = rate_terms(y_lik, y_lik, z_lik, model.num_slices, model.num_slices, h * w)
    x_hat = apply(ProgressiveSIC.synthesis, lat.y_hat)
    mse = _mse(x, x_hat)
    policy = {"dtype": model.dtype, "precision": model.precision}  # LPIPS follows the model
    lp = jnp.mean(lpips_distance(lpips_params, x, x_hat, "alex", **policy))
    balance = r.bpp_y_splits_std - jnp.min(r.bpp_slices)
    loss = 2048.0 * mse + 8.0 * lp + balance + r.bpp_y + r.bpp_z
    metrics = {
        "loss": loss,
        "mse_syntactic": mse,
        "lpips_syntactic": lp,
        "bpp_y": r.bpp_y,
        "bpp_z": r.bpp_z,
        "bpp_y_splits_std": r.bpp_y_splits_std,
        "bpp_y_splits_min": jnp.min(r.bpp_slices),
    }
    return loss, metrics


def aux_loss(model: ProgressiveSIC, params: dict) -> jax.Array:
    """The entropy bottleneck's auxiliary loss (CompressAI's `EntropyBottleneck.loss`, as the
    official code trains its quantiles): a float32 scalar, sum over channels of |logits of
    the cumulative at the quantiles - (-log(2/1e-9 - 1), 0, +log(2/1e-9 - 1))|. Only the
    `quantiles` parameters receive its gradient in training (MODEL.md §4: their AdamW)."""
    return model.apply({"params": params}, method=ProgressiveSIC.aux_loss)
