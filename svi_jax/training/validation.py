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

        @functools.partial(jax.jit, static_argnames="hw")
        def evaluate(params, x, level, key, hw):
            logger.info("tracing the validation pass for %s (image %s)", x.shape, hw)
            y_shape, _ = latent_shapes(model, x.shape)
            u = jax.random.uniform(key, (self.num_samples * y_shape[0], *y_shape[1:]))
            out = evaluation_pass(model, params, x, level, u, num_pixels=hw[0] * hw[1])
            x_hat = out["x_hat"]
            x_rep = jnp.tile(x, (self.num_samples, 1, 1, 1))
            crop = lambda a: a[:, : hw[0], : hw[1]]
            mse = jnp.mean((crop(x_rep) - crop(x_hat)) ** 2)
            lp_in = (crop(x_rep), crop(x_hat)) if min(hw) >= LPIPS_MIN_SIZE else (x_rep, x_hat)
            lp = jnp.mean(lpips_distance(lpips_params, *lp_in, "alex"))
            lam, gam, beta = level_weights(loss_cfg, level)
            r = out["rates"]
            bpp = r.bpp_ys + r.bpp_z
            loss = lam * mse + gam * lp + beta * bpp
            loss = loss + out["synonym_distance"] + out["sample_distance"]
            return {"loss": loss, "mse": mse, "lpips": lp, "bpp": bpp}, x_hat[: x.shape[0]]

        self._evaluate = evaluate

    def _one(self, params, image, level):
        key = jax.random.fold_in(self.key, level)
        x, hw = pad_to_multiple(image[None])  # as the codec pads: zeros bottom/right
        return self._evaluate(params, jnp.asarray(x), jnp.int32(level), key, hw=hw)

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
