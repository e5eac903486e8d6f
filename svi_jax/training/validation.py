"""Validation on a held-out folder: per level loss, estimated bpp, PSNR and LPIPS.

The validation loss at level l is the test-mode objective
    lambda_l MSE + gamma_l LPIPS + beta_l (bpp_ys + bpp_z) + synonym + sample distance,
and "the" validation loss is its mean over the 16 levels (the official "best" rule).
bpp is estimated from the likelihoods of round(y) and z_hat (no entropy coding here);
PSNR uses reconstructions rounded to 8 bits. One compilation serves every level.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.data.image_io import DataError, eval_images
from svi_jax.forward import latent_shapes, test_forward
from svi_jax.metrics.lpips import lpips_distance
from svi_jax.objective import level_weights

logger = logging.getLogger(__name__)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if size <= 0 or (h < size and w < size):
        return image
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[top : top + size, left : left + size]


def load_validation_images(path, crop: int) -> list[tuple[str, np.ndarray]]:
    """[(name, float32 HWC in [0, 1])], center-cropped to `crop` (0: full), 64-multiple sides."""
    images = []
    for name, image in eval_images(path):
        image = center_crop(image, crop)
        h, w = (max(side - side % 64, 64) for side in image.shape[:2])  # whole latents, no pad
        images.append((name, image[:h, :w].astype(np.float32) / 255.0))
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
        def evaluate(params, x, level, key):
            logger.info("tracing the validation pass for %s", x.shape)
            y_shape, _ = latent_shapes(model, x.shape)
            u = jax.random.uniform(key, (self.num_samples * y_shape[0], *y_shape[1:]))
            out = test_forward(model, params, x, level, u)
            x_hat = out["x_hat"]
            x_rep = jnp.tile(x, (self.num_samples, 1, 1, 1))
            mse = jnp.mean((x_rep - x_hat) ** 2)
            lp = jnp.mean(lpips_distance(lpips_params, x_rep, x_hat, "alex"))
            lam, gam, beta = level_weights(loss_cfg, level)
            r = out["rates"]
            bpp = r.bpp_ys + r.bpp_z
            loss = lam * mse + gam * lp + beta * bpp
            loss = loss + out["synonym_distance"] + out["sample_distance"]
            return {"loss": loss, "mse": mse, "lpips": lp, "bpp": bpp}, x_hat[: x.shape[0]]

        self._evaluate = evaluate

    def _one(self, params, image, level):
        key = jax.random.fold_in(self.key, level)  # sides are multiples of 64: no padding
        return self._evaluate(params, jnp.asarray(image[None]), jnp.int32(level), key)

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
                row["psnr"] = float(-10 * np.log10(max(mse8, 1e-10)))
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
