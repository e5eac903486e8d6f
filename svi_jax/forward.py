"""Functional forward passes of progressive SIC: training at level l, the test pass (MODEL.md §3).

The level is a traced integer: channels are selected with masks (`c < slice_width * level`),
never with Python slicing, so one compilation serves all levels. Every random draw can be
injected as an array (`TrainNoise`), which is how the tests replay the official reference.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.nn.entropy_models import (
    bits,
    channel_mask,
    gaussian_likelihood,
    quantize_around,
    ste_round,
)
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC

DETAIL_HALF_WIDTH = 2.0  # detail samples: round(mu_hyper + U[-2, 2))


class TrainNoise(NamedTuple):
    """All random draws of one training forward.

    y: U[-1/2, 1/2) like y (Gaussian-conditional rate noise); z: U[-1/2, 1/2) like z (bottleneck
    rate noise); detail: U[0, 1) of shape (M*B, h, w, C), sample-major rows (row = m*B + b); only
    channels >= slice_width*level are used.
    """

    y: jax.Array
    z: jax.Array
    detail: jax.Array


IMAGE_LAYOUT = "NHWC float in [0, 1], shape (B, H, W, 3)"


def check_images(x, what: str = "x") -> None:
    """Raises, at trace time, for an image batch the model cannot take: the expected layout
    is `IMAGE_LAYOUT` with H and W multiples of DOWNSCALE_Z (64: z is at 1/64 of the image).

    Only static properties are checked (ndim, shape, dtype; nothing inside jit reads values),
    so a [0, 255] float batch passes: the range is the caller's part of the contract.

    Raises:
      ValueError: ndim != 4 (e.g. an HWC image without its batch axis), 3 != channels
        (NCHW, grayscale), or H, W not multiples of 64 (the message gives the size and
        `svi_jax.pad_to_multiple`).
      TypeError: a non-floating dtype (uint8: divide by 255 first).
    """
    shape, dtype = tuple(x.shape), x.dtype
    if len(shape) != 4:
        raise ValueError(f"{what} must be {IMAGE_LAYOUT}, got shape {shape} ({len(shape)} axes)")
    if shape[-1] != 3:
        hint = " (NCHW? move channels last)" if shape[1] == 3 else ""
        raise ValueError(
            f"{what} must be {IMAGE_LAYOUT}, got {shape[-1]} channels in shape {shape}{hint}"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{what} must be {IMAGE_LAYOUT}, got dtype {dtype}; uint8 images: x / 255.0"
        )
    h, w = shape[1], shape[2]
    if h % DOWNSCALE_Z or w % DOWNSCALE_Z or h < 1 or w < 1:
        raise ValueError(
            f"{what}: image height and width must be multiples of {DOWNSCALE_Z} (z is at "
            f"1/{DOWNSCALE_Z} of the image), got {h}x{w} (H x W); pad with "
            "svi_jax.pad_to_multiple and crop the output (svi_jax.crop_to)"
        )


def latent_shapes(model: ProgressiveSIC, image_shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(y shape, z shape) of an image batch of `image_shape` (B, H, W, 3), H and W multiples
    of 64 (ValueError otherwise, as `check_images`)."""
    if len(image_shape) != 4:
        raise ValueError(f"image shape must be (B, H, W, 3), got {tuple(image_shape)}")
    b, h, w = image_shape[:3]
    if h % DOWNSCALE_Z or w % DOWNSCALE_Z:
        raise ValueError(
            f"image height and width must be multiples of {DOWNSCALE_Z}, got {h}x{w} (H x W); "
            "use svi_jax.pad_to_multiple"
        )
    y_shape = (b, h // DOWNSCALE_Y, w // DOWNSCALE_Y, model.latent_channels)
    z_shape = (b, h // DOWNSCALE_Z, w // DOWNSCALE_Z, model.hyper_channels)
    return y_shape, z_shape


def draw_train_noise(
    model: ProgressiveSIC, rng: jax.Array, image_shape: tuple[int, ...], num_samples: int
) -> TrainNoise:
    y_shape, z_shape = latent_shapes(model, image_shape)
    ky, kz, kd = jax.random.split(rng, 3)
    return TrainNoise(
        y=jax.random.uniform(ky, y_shape, minval=-0.5, maxval=0.5),
        z=jax.random.uniform(kz, z_shape, minval=-0.5, maxval=0.5),
        detail=jax.random.uniform(kd, (num_samples * y_shape[0], *y_shape[1:])),
    )


def sample_details(mu_hyper: jax.Array, uniform: jax.Array) -> jax.Array:
    """round(mu_hyper + U[-2, 2)) with STE; `uniform` in [0, 1), same shape as mu_hyper.

    Computed as mu + 2 * (2u - 1), the official float32 arithmetic, so replayed draws land on
    the same integers.
    """
    return ste_round(mu_hyper + DETAIL_HALF_WIDTH * (2.0 * uniform - 1.0))


def compose_level_latent(
    y_hat: jax.Array, details: jax.Array, level: jax.Array, slice_width: int
) -> jax.Array:
    """cat(y_hat[..., :W*l], details[..., W*l:]) with a traced level."""
    mask = channel_mask(y_hat.shape[-1], level, slice_width)
    return jnp.where(mask, y_hat, details)


class RateTerms(NamedTuple):
    bpp_y: jax.Array
    bpp_ys: jax.Array
    bpp_z: jax.Array
    bpp_slices: jax.Array  # (S,) from the likelihoods of round(y)
    bpp_y_splits_std: jax.Array
    bpp_y_splits_chunk: jax.Array


def rate_terms(
    y_lik: jax.Array,
    y_lik_round: jax.Array,
    z_lik: jax.Array,
    level: jax.Array,
    num_slices: int,
    num_pixels: int,
) -> RateTerms:
    """Bits per pixel (MODEL.md §3.7): sum(-log2 L) / (H*W) / B.

    `y_lik` feeds bpp_y/bpp_ys (noisy in training); per-slice values use `y_lik_round`.
    `num_pixels` is the H*W the rate is divided by (the unpadded size for evaluation).
    """
    b, c = y_lik.shape[0], y_lik.shape[-1]
    norm = 1.0 / (num_pixels * b)
    y_bits = bits(y_lik)
    mask = channel_mask(c, level, c // num_slices)
    per_slice = jnp.sum(bits(y_lik_round).reshape(-1, num_slices, c // num_slices), axis=(0, 2))
    per_slice = per_slice * norm
    return RateTerms(
        bpp_y=jnp.sum(y_bits) * norm,
        bpp_ys=jnp.sum(jnp.where(mask, y_bits, 0.0)) * norm,
        bpp_z=jnp.sum(bits(z_lik)) * norm,
        bpp_slices=per_slice,
        bpp_y_splits_std=jnp.std(per_slice, ddof=1),
        bpp_y_splits_chunk=jnp.take(per_slice, jnp.asarray(level) - 1),
    )


def masked_mse(a: jax.Array, b: jax.Array, mask: jax.Array, count_per_row: jax.Array) -> jax.Array:
    """Mean of (a-b)^2 over the channels in `mask`; 0 when no channel is selected."""
    total = jnp.sum(jnp.where(mask, (a - b) ** 2, 0.0))
    denom = count_per_row * (a.size // a.shape[-1])
    return jnp.where(denom > 0, total / jnp.maximum(denom, 1), 0.0)


class Latents(NamedTuple):
    y: jax.Array
    z: jax.Array
    z_hat: jax.Array
    hyper: jax.Array
    y_hat: jax.Array
    scales: jax.Array
    means: jax.Array


def encode_latents(model: ProgressiveSIC, params: dict, x: jax.Array) -> Latents:
    """Everything the encoder side computes once per image (no randomness).

    x: (B, H, W, 3) float in [0, 1], H and W multiples of 64 (`check_images`: ValueError /
    TypeError at trace time otherwise).
    """
    check_images(x)
    apply = bound_apply(model, params)
    y = apply(ProgressiveSIC.analysis, x)
    z = apply(ProgressiveSIC.hyper_analysis, y)
    medians = apply(ProgressiveSIC.z_medians)
    z_hat = quantize_around(z, medians)
    hyper = apply(ProgressiveSIC.hyper_synthesis, z_hat)
    y_hat = ste_round(y)
    scales, means = apply(ProgressiveSIC.gaussian_params, hyper, y_hat)
    return Latents(y, z, z_hat, hyper, y_hat, scales, means)


def train_forward(
    model: ProgressiveSIC,
    params: dict,
    x: jax.Array,
    level: jax.Array,
    noise: TrainNoise,
    reencode: bool = True,
    remat_samples: bool = True,
) -> dict:
    """Training forward at `level` with M = noise.detail.shape[0] // B detail samples.

    The 1 + M decodes (the syntactic ŷ, then the M level-l latents) and their re-encodings run
    one after the other in a `lax.scan` (`decode_samples`): the graph holds one g_s and one g_a
    for all of them, and with `remat_samples` (the default) backprop keeps only each sample's
    inputs, recomputing its decode, so peak memory does not grow with M.
    Returns a dict of tensors and scalars named as in the official `forward`.
    x: (B, H, W, 3) float in [0, 1], H and W multiples of 64 (`check_images`).
    """
    check_images(x)
    apply = bound_apply(model, params)
    b, h, w, _ = x.shape
    lat = encode_latents(model, params, x)
    c, width = model.latent_channels, model.slice_width
    num_samples = noise.detail.shape[0] // b

    z_lik = apply(ProgressiveSIC.z_likelihood, lat.z + noise.z)
    y_lik = gaussian_likelihood(lat.y + noise.y, lat.means, lat.scales)
    y_lik_round = gaussian_likelihood(lat.y_hat, lat.means, lat.scales)
    rates = rate_terms(y_lik, y_lik_round, z_lik, level, model.num_slices, h * w)

    mu_hyper = lat.hyper[..., c:]
    details = sample_details(jnp.tile(mu_hyper, (num_samples, 1, 1, 1)), noise.detail)
    y_samples = compose_level_latent(
        jnp.tile(lat.y_hat, (num_samples, 1, 1, 1)), details, level, width
    )
    # Sample 0 is the syntactic ŷ: its synonym term covers all channels, its sample term none.
    latents = jnp.concatenate([lat.y_hat, y_samples]).reshape(1 + num_samples, *lat.y.shape)
    sampled = jnp.concatenate([jnp.zeros_like(lat.y_hat), details])
    sampled = sampled.reshape(1 + num_samples, *lat.y.shape)
    transmitted = jnp.concatenate(
        [jnp.full((1,), c), jnp.full((num_samples,), width * jnp.asarray(level))]
    )
    dec = decode_samples(
        model, params, lat.y_hat, latents, sampled, transmitted, reencode, remat_samples
    )
    out = {
        "latents": lat,
        "x_hat_syn": dec.x_hat[0],
        "x_hat_samples": dec.x_hat[1:].reshape(num_samples * b, *x.shape[1:]),
        "y_hat_samples": details,
        "rates": rates,
        "y_likelihoods": y_lik,
        "y_likelihoods_round": y_lik_round,
        "z_likelihoods": z_lik,
    }
    if reencode:
        # MODEL.md §3.8: means over the 1 + M terms (the syntactic sample term is 0)
        out["synonym_distance"] = jnp.mean(dec.synonym)
        out["sample_distance"] = jnp.mean(dec.sample)
    return out


class DecodedSamples(NamedTuple):
    x_hat: jax.Array  # (K, B, H, W, 3) g_s of each latent, clamped to [0, 1]
    synonym: jax.Array  # (K,) MSE of the transmitted channels: ŷ vs g_a(x̂_k)
    sample: jax.Array  # (K,) MSE of the sampled channels: sampled_k vs g_a(x̂_k)


def decode_samples(
    model: ProgressiveSIC,
    params: dict,
    y_hat: jax.Array,
    latents: jax.Array,
    sampled: jax.Array,
    transmitted: jax.Array,
    reencode: bool = True,
    remat: bool = True,
) -> DecodedSamples:
    """Decode K latents and re-encode the images, one latent per `lax.scan` iteration.

    y_hat (B, h, w, C): the transmitted latent; latents, sampled (K, B, h, w, C): the decoded
    latents and the detail values they hold; transmitted (K,) int: channels [0, transmitted_k)
    come from y_hat (MODEL.md §3.8's synonym distance), the others were sampled (sample distance;
    0 when none). `remat` wraps the iteration in jax.checkpoint: backprop stores only its
    inputs and recomputes its activations, so memory is one sample's whatever K (the cost is
    one more forward of g_s and g_a per sample). Without `reencode` the distances are 0.
    """
    apply = bound_apply(model, params)
    c = y_hat.shape[-1]

    def one(_, xs):
        latent, sample_k, n_sem = xs
        x_hat = apply(ProgressiveSIC.synthesis, latent)
        if not reencode:
            return None, (x_hat, jnp.zeros(()), jnp.zeros(()))
        y_dis = apply(ProgressiveSIC.analysis, x_hat)
        sem = jnp.arange(c) < n_sem
        syn = masked_mse(y_hat, y_dis, sem, n_sem)
        smp = masked_mse(sample_k, y_dis, ~sem, c - n_sem)
        return None, (x_hat, syn, smp)

    if remat:
        one = jax.checkpoint(one, prevent_cse=False)  # prevent_cse is moot inside scan
    _, out = jax.lax.scan(one, None, (latents, sampled, transmitted))
    return DecodedSamples(*out)


def evaluation_pass(
    model: ProgressiveSIC,
    params: dict,
    x: jax.Array,
    level: jax.Array,
    detail_uniform: jax.Array,
    num_pixels: int | None = None,
) -> dict:
    """The official `test` pass: rates from round(y), one decode per detail sample, re-encode.

    detail_uniform: U[0, 1) of shape (M*B, h, w, C). `num_pixels` defaults to H*W of `x`; give
    the unpadded area when x was padded (the official code divides by the padded area: a bug).
    The M decodes run in one `lax.scan` (`decode_samples`).
    x: (B, H, W, 3) float in [0, 1], H and W multiples of 64 (`check_images`).
    """
    check_images(x)
    apply = bound_apply(model, params)
    b, h, w, _ = x.shape
    lat = encode_latents(model, params, x)
    c, width = model.latent_channels, model.slice_width
    num_samples = detail_uniform.shape[0] // b
    z_lik = apply(ProgressiveSIC.z_likelihood, lat.z_hat)
    y_lik_round = gaussian_likelihood(lat.y_hat, lat.means, lat.scales)
    rates = rate_terms(
        y_lik_round, y_lik_round, z_lik, level, model.num_slices, num_pixels or h * w
    )
    details = sample_details(jnp.tile(lat.hyper[..., c:], (num_samples, 1, 1, 1)), detail_uniform)
    y_samples = compose_level_latent(
        jnp.tile(lat.y_hat, (num_samples, 1, 1, 1)), details, level, width
    )
    stacked = (num_samples, *lat.y.shape)
    transmitted = jnp.full((num_samples,), width * jnp.asarray(level))
    dec = decode_samples(
        model, params, lat.y_hat, y_samples.reshape(stacked), details.reshape(stacked), transmitted
    )
    return {
        "latents": lat,
        "x_hat": dec.x_hat.reshape(num_samples * b, *x.shape[1:]),
        "y_hat_samples": details,
        "rates": rates,
        "y_likelihoods_round": y_lik_round,
        "z_likelihoods": z_lik,
        "synonym_distance": jnp.mean(dec.synonym),
        "sample_distance": jnp.mean(dec.sample),
    }


def bound_apply(model: ProgressiveSIC, params: dict):
    """`apply(method, *args)`: call one entry point of `model` with `params`."""
    return lambda method, *a: model.apply({"params": params}, *a, method=method)


def pad_to_multiple(x: np.ndarray | jax.Array, multiple: int = DOWNSCALE_Z):
    """Zero-pad (B, H, W, C) bottom/right to a multiple; returns (padded, (H, W)).

    Raises ValueError for another number of axes (an HWC image: add the batch axis, x[None]).
    """
    if x.ndim != 4:
        raise ValueError(
            f"pad_to_multiple takes a batch (B, H, W, C), got shape {tuple(x.shape)}; "
            "for one (H, W, C) image pass x[None]"
        )
    h, w = x.shape[1], x.shape[2]
    ph, pw = (-h) % multiple, (-w) % multiple
    lib = jnp if isinstance(x, jax.Array) else np
    padded = lib.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))) if (ph or pw) else x
    return padded, (h, w)


def crop_to(x, hw: tuple[int, int]):
    return x[:, : hw[0], : hw[1]]
