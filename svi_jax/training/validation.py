"""Validation on a held-out folder: per level loss, estimated bpp, PSNR and LPIPS.

The validation loss at level l is the test-mode objective
    lambda_l MSE + gamma_l LPIPS + beta_l (bpp_ys + bpp_z) + synonym + sample distance,
and "the" validation loss is its mean over the 16 levels (the official "best" rule).
bpp is estimated from the likelihoods of round(y) and z_hat (no entropy coding here);
PSNR uses reconstructions rounded to 8 bits. One compilation serves every level.

Images of any size >= 1 px are used whole (after the centre crop): they are zero-padded
bottom/right to a multiple of 64 exactly as the codec pads them (`pad_to_multiple`), and
MSE, PSNR and bpp are measured on the original H x W. LPIPS uses the original H x W when
both sides are >= LPIPS_MIN_SIZE, else the padded pair (AlexNet has no output below that).

Compilations: the model pass (`Validator._evaluate`, traced as "validation pass") takes the
original H x W as data (a pixel mask for MSE, a traced pixel count for bpp), so one
compilation serves every image of a padded shape and every level. LPIPS is a separate small
jit (`_lpips`, "validation lpips") with the crop static: AlexNet's convolutions see the
pixels beyond a crop's edge, so a mask cannot stand in for the crop; it compiles once per
original size (about a second for the tiny config), not the whole model pass.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.data.image_io import DataError, eval_images
from svi_jax.forward import evaluation_pass, latent_shapes, pad_to_multiple
from svi_jax.metrics.lpips import lpips_distance
from svi_jax.metrics.pixelwise import psnr_from_mse
from svi_jax.objective import level_weights
from svi_jax.tracing import count_trace

logger = logging.getLogger(__name__)
LPIPS_MIN_SIZE = 31  # px: below it LPIPS-alex has no feature map left (NaN)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if size <= 0 or (h < size and w < size):
        return image
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[top : top + size, left : left + size]


def load_validation_images(path, crop: int) -> list[tuple[str, np.ndarray]]:
    """[(name, float32 HWC in [0, 1])], center-cropped to `crop` (0: full), any size."""
    images = []
    for name, image in eval_images(path):
        image = center_crop(image, crop)
        images.append((name, image.astype(np.float32) / 255.0))
    if not images:
        raise DataError(f"no validation image in {path}")
    return images


class Validator:
    def __init__(self, config, model, lpips_params, images):
        self.model, self.images = model, images
        self.num_samples = max(int(config.train.val_samples), 1)
        self.key = jax.random.PRNGKey(int(config.seed) + 1)
        loss_cfg = config.loss

        @jax.jit
        def evaluate(params, x, level, key, hw):
            """hw: int32 (2,) original (H, W) inside the padded x: data, not a static shape."""
            count_trace("validation pass")
            logger.info("tracing the validation pass for %s", x.shape)
            y_shape, _ = latent_shapes(model, x.shape)
            u = jax.random.uniform(key, (self.num_samples * y_shape[0], *y_shape[1:]))
            pixels = (hw[0] * hw[1]).astype(jnp.float32)  # the original H*W, traced
            out = evaluation_pass(model, params, x, level, u, num_pixels=pixels)
            x_hat = out["x_hat"]
            x_rep = jnp.tile(x, (self.num_samples, 1, 1, 1))
            inside = (jnp.arange(x.shape[1])[:, None] < hw[0]) & (
                jnp.arange(x.shape[2])[None, :] < hw[1]
            )
            squared = jnp.where(inside[None, :, :, None], (x_rep - x_hat) ** 2, 0.0)
            mse = jnp.sum(squared) / (pixels * x_rep.shape[0] * x_rep.shape[3])
            lam, gam, beta = level_weights(loss_cfg, level, model.num_slices)
            r = out["rates"]
            bpp = r.bpp_ys + r.bpp_z
            partial = lam * mse + beta * bpp  # + gam * LPIPS (`_lpips`, added in `_one`)
            partial = partial + out["synonym_distance"] + out["sample_distance"]
            metrics = {"partial_loss": partial, "lpips_weight": gam, "mse": mse, "bpp": bpp}
            return metrics, x_hat

        @functools.partial(jax.jit, static_argnames="hw")
        def lpips(x, x_hat, hw):
            """hw: the static crop (original H, W), or None for the padded pair."""
            count_trace("validation lpips")
            logger.info("tracing the validation LPIPS for %s (image %s)", x.shape, hw)
            x_rep = jnp.tile(x, (self.num_samples, 1, 1, 1))
            crop = (lambda a: a) if hw is None else (lambda a: a[:, : hw[0], : hw[1]])
            return jnp.mean(lpips_distance(lpips_params, crop(x_rep), crop(x_hat), "alex"))

        self._evaluate, self._lpips = evaluate, lpips

    def _one(self, params, image, level):
        """({loss, mse, lpips, bpp} as device scalars, x_hat[:1]): the first of the M
        reconstructions only, (1, H', W', 3) float32 at the padded size H', W' (multiples of
        64); the metrics average over all M."""
        key = jax.random.fold_in(self.key, level)
        x, hw = pad_to_multiple(image[None])  # as the codec pads: zeros bottom/right
        x = jnp.asarray(x)
        metrics, x_hat = self._evaluate(
            params, x, jnp.int32(level), key, jnp.asarray(hw, jnp.int32)
        )
        # Below LPIPS_MIN_SIZE the padded pair is scored: one compilation per padded shape.
        crop = tuple(int(v) for v in hw) if min(hw) >= LPIPS_MIN_SIZE else None
        lp = self._lpips(x, x_hat, hw=crop)
        loss = metrics.pop("partial_loss") + metrics.pop("lpips_weight") * lp
        metrics.update(loss=loss, lpips=lp)
        return metrics, x_hat[: x.shape[0]]

    def run(self, params) -> dict:
        """{"loss": mean over levels, "levels": {l: {loss, bpp, psnr, lpips}}}."""
        per_level = {}
        for level in range(1, self.model.num_slices + 1):
            rows = []
            for _, image in self.images:
                metrics, x_hat = self._one(params, image, level)
                h, w = image.shape[:2]
                rec = np.round(np.asarray(x_hat[0, :h, :w]) * 255.0) / 255.0
                mse8 = float(np.mean((rec - image) ** 2))
                row = {k: float(v) for k, v in metrics.items()}
                row["psnr"] = float(psnr_from_mse(max(mse8, 1e-10)))  # of the 8-bit image
                rows.append(row)
            per_level[level] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        return {
            "loss": float(np.mean([v["loss"] for v in per_level.values()])),
            "levels": per_level,
        }

    def reconstructions(self, params, levels) -> tuple[np.ndarray, list[np.ndarray]]:
        """The first validation image and its reconstructions at `levels` (for image grids)."""
        image = self.images[0][1]
        h, w = image.shape[:2]
        recons = [np.asarray(self._one(params, image, lv)[1][0, :h, :w]) for lv in levels]
        return image, recons
