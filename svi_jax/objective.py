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
from svi_jax.metrics.lpips import lpips_distance
from svi_jax.nn.entropy_models import gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC


def level_weights(loss_config: ml_collections.ConfigDict, level: jax.Array):
    """(lambda_l, gamma_l, beta_l) for a traced level in 1..S."""
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
    """Scalar loss and a dict of named scalars (official names) for one batch at `level`.

    lpips_masks: optional LPIPS head keep-masks for the official train-mode dropout, one per
    LPIPS layer, for the stacked batch [x_syn; x_samples] ((1 + M) * B rows).
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
    e.g. the GAN phase, which also feeds the reconstructions to its discriminator)."""
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
    lam16, gam16, beta16 = level_weights(loss_config, model.num_slices)
    lam, gam, beta = level_weights(loss_config, level)
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
    `warming` does.
    """
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
    return model.apply({"params": params}, method=ProgressiveSIC.aux_loss)
