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

from svi_jax.input_checks import (  # noqa: F401  (check_images, latent_shapes: public here)
    IMAGE_LAYOUT,
    TRACED_LEVEL_CONTRACT,
    check_detail_uniform,
    check_images,
    check_level,
    check_num_pixels,
    check_train_noise,
    latent_shapes,
)
from svi_jax.integer_checks import as_integer
from svi_jax.nn.entropy_models import (
    bits,
    channel_mask,
    gaussian_likelihood,
    quantize_around,
    ste_round,
)
from svi_jax.nn.model import DOWNSCALE_Z, ProgressiveSIC

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


def draw_train_noise(
    model: ProgressiveSIC, rng: jax.Array, image_shape: tuple[int, ...], num_samples: int
) -> TrainNoise:
    """Every random draw of one `train_forward` (MODEL.md §3 steps 3-4), float32.

    image_shape: (B, H, W, 3) of the batch, H and W multiples of 64; num_samples: M detail
    samples per image, >= 1 for `train_forward` / `svi_loss` (0 draws only y and z, all that
    `warming_loss` reads; `train_forward` refuses it rather than divide by M = 0).
    Returns `TrainNoise` with y (B, H/16, W/16, C) and z (B, H/64, W/64, Cz) in U[-1/2, 1/2),
    detail (M*B, H/16, W/16, C) in U[0, 1) (row m*B + b); C = model.latent_channels,
    Cz = model.hyper_channels. Use it only with images of `image_shape` (`train_forward`
    raises otherwise).

    Raises ValueError for an image shape `latent_shapes` refuses or num_samples < 0,
    TypeError for a non-integer num_samples.
    """
    num_samples = as_integer(num_samples, "num_samples", " >= 0")  # JAX int scalars too
    if num_samples < 0:
        raise ValueError(f"num_samples must be an integer >= 0, got {num_samples}")
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
    """cat(y_hat[..., :W*l], details[..., W*l:]) (MODEL.md §3 step 4) with W = slice_width.

    y_hat, details: (..., C) float; level: scalar int in 1..C/W (`check_level`: TypeError /
    ValueError for a concrete level outside it; a traced one: `TRACED_LEVEL_CONTRACT`).
    """
    check_level(level, y_hat.shape[-1] // slice_width)
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

    `y_lik` feeds bpp_y/bpp_ys (noisy in training); per-slice values use `y_lik_round`; both
    (B, h, w, C) likelihoods in (0, 1], z_lik (B, h/4, w/4, Cz). `num_pixels` (> 0) is the H*W
    the rate is divided by (the unpadded size for evaluation). level: scalar int in
    1..num_slices (`check_level`). All outputs are float32 bits per pixel.

    Raises ValueError / TypeError for a concrete level outside 1..num_slices, a non-scalar
    or non-integer level, or num_pixels <= 0. A traced level is checked for shape and dtype
    only (`svi_jax.input_checks.TRACED_LEVEL_CONTRACT`).
    """
    check_level(level, num_slices)
    check_num_pixels(num_pixels)
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
    """Training forward at `level` with M = noise.detail.shape[0] // B detail samples
    (MODEL.md §3).

    x: (B, H, W, 3) float in [0, 1], H and W multiples of 64 (`check_images`); level: scalar
    int in 1..S (S = model.num_slices); noise: `draw_train_noise(model, rng, x.shape, M)`,
    M >= 1. The 1 + M decodes (the syntactic ŷ, then the M level-l latents) and their
    re-encodings run one after the other in a `lax.scan` (`decode_samples`): the graph holds
    one g_s and one g_a for all of them, and with `remat_samples` (the default) backprop
    keeps only each sample's inputs, recomputing its decode, so peak memory does not grow
    with M.
    Returns a dict of tensors and scalars named as in the official `forward`: "x_hat_syn"
    (B, H, W, 3), "x_hat_samples" (M*B, H, W, 3), "rates" (`RateTerms`, bits per pixel), ...

    Raises (at trace time): ValueError / TypeError for bad images (`check_images`), a
    concrete level outside 1..S or a non-scalar / non-integer level (`check_level`), noise
    drawn for another batch size, image size, model or M < 1, or a TypeError for noise that is
    not a `TrainNoise` (`check_train_noise`). A traced level's value is not checked: outside
    1..S the outputs are finite nonsense or NaN (`svi_jax.input_checks.TRACED_LEVEL_CONTRACT`).
    """
    check_images(x)
    check_level(level, model.num_slices)
    check_train_noise(model, x.shape, noise)
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

    x: (B, H, W, 3) float in [0, 1], H and W multiples of 64 (`check_images`); level: scalar
    int in 1..S (S = model.num_slices). detail_uniform: U[0, 1) of shape (M*B, h, w, C), M >= 1,
    h = H/16, w = W/16, C = model.latent_channels (`latent_shapes(model, x.shape)[0]` gives
    (B, h, w, C)), row m*B + b. `num_pixels` (> 0) defaults to H*W of `x`; give the unpadded
    area when x was padded (the official code divides by the padded area: a bug). The M
    decodes run in one `lax.scan` (`decode_samples`). Returns "x_hat" (M*B, H, W, 3) in
    [0, 1], "rates" (`RateTerms`, bits per pixel), the latents and the two distances.

    Raises (at trace time): ValueError / TypeError for bad images, a concrete level outside
    1..S or a non-scalar / non-integer level, a detail_uniform of another shape, or
    num_pixels <= 0. A traced level's value is not checked (outside 1..S: finite nonsense or
    NaN; `svi_jax.input_checks.TRACED_LEVEL_CONTRACT`).
    """
    check_images(x)
    check_level(level, model.num_slices)
    check_detail_uniform(model, x.shape, detail_uniform)
    check_num_pixels(num_pixels)
    apply = bound_apply(model, params)
    b, h, w, _ = x.shape
    lat = encode_latents(model, params, x)
    c, width = model.latent_channels, model.slice_width
    num_samples = detail_uniform.shape[0] // b
    z_lik = apply(ProgressiveSIC.z_likelihood, lat.z_hat)
    y_lik_round = gaussian_likelihood(lat.y_hat, lat.means, lat.scales)
    rates = rate_terms(
        y_lik_round,
        y_lik_round,
        z_lik,
        level,
        model.num_slices,
        h * w if num_pixels is None else num_pixels,
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
    """x[:, :H, :W]: undoes `pad_to_multiple` on a (B, H', W', C) batch (numpy or JAX, any
    dtype), with hw = (H, W) the size `pad_to_multiple` returned."""
    return x[:, : hw[0], : hw[1]]
