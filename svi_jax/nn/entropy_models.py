"""Entropy models: factorized-prior bottleneck for z and the Gaussian conditional for y.

Both follow CompressAI 1.2.4 numerically (MODEL.md §2), including its custom gradients:
- `ste_round`: value round(x), gradient identity.
- `lower_bound`: forward max(x, b); backward passes the gradient where x >= b or where the
  incoming gradient is negative (it would push x up towards the bound), else 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from svi_jax.nn.initializers import Constant, Uniform

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11


def ste_round(x: jax.Array) -> jax.Array:
    """round-half-to-even in value (as torch.round), identity gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


@jax.custom_vjp
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
    return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
    return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(res, g):
    x, bound = res
    pass_through = (x >= bound) | (g < 0)
    return (jnp.where(pass_through, g, 0.0), None)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def standard_normal_cdf(x: jax.Array) -> jax.Array:
    # erfc form as CompressAI: accurate in the lower tail where 1 - cdf would cancel.
    return 0.5 * erfc(-(2**-0.5) * x)


def gaussian_likelihood(values: jax.Array, means: jax.Array, scales: jax.Array) -> jax.Array:
    """P(round(values)) under N(means, scales) discretised on the integer grid of `values`.

    `values` is the symbol itself (round(y) or y + noise), not values - means; the Gaussian is
    centred at a non-integer mean. sigma is lower-bounded at 0.11 (straight-through bound) and the
    result clamped to [1e-9, 1] with a plain clamp, as the official model does.
    """
    scales = lower_bound(scales, SCALE_BOUND)
    v = jnp.abs(values - means)
    upper = standard_normal_cdf((0.5 - v) / scales)
    lower = standard_normal_cdf((-0.5 - v) / scales)
    return jnp.clip(upper - lower, LIKELIHOOD_BOUND, 1.0)


class EntropyBottleneck(nn.Module):
    """Ballé et al. 2018 factorized density, one univariate model per channel (last axis).

    Parameters keep CompressAI's shapes (_matrix{i}: (C, out, in), _bias{i}/_factor{i}:
    (C, out, 1), quantiles: (C, 1, 3)) so official tensors load unchanged.
    """

    channels: int
    filters: Sequence[int] = (3, 3, 3, 3)
    init_scale: float = 10.0
    tail_mass: float = 1e-9

    def setup(self):
        dims = (1, *self.filters, 1)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        c = self.channels
        matrices, biases, factors = [], [], []
        for i in range(len(self.filters) + 1):
            fill = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            shape = (c, dims[i + 1], dims[i])
            matrices.append(self.param(f"matrix{i}", Constant(fill), shape))
            biases.append(self.param(f"bias{i}", Uniform(0.5), (c, dims[i + 1], 1)))
            if i < len(self.filters):
                factors.append(self.param(f"factor{i}", Constant(0.0), (c, dims[i + 1], 1)))
        self.matrices, self.biases, self.factors = matrices, biases, factors
        init = float(self.init_scale)
        self.quantiles = self.param("quantiles", Constant((-init, 0.0, init)), (c, 1, 3))

    def logits_cumulative(self, x: jax.Array, stop_gradient: bool = False) -> jax.Array:
        """x: (C, 1, N) -> (C, 1, N) logits of the cumulative density."""
        logits = x
        for i, (m, b) in enumerate(zip(self.matrices, self.biases, strict=True)):
            if stop_gradient:
                m, b = jax.lax.stop_gradient(m), jax.lax.stop_gradient(b)
            logits = jnp.matmul(jax.nn.softplus(m), logits, precision=jax.lax.Precision.HIGHEST)
            logits = logits + b
            if i < len(self.factors):
                f = self.factors[i]
                if stop_gradient:
                    f = jax.lax.stop_gradient(f)
                logits = logits + jnp.tanh(f) * jnp.tanh(logits)
        return logits

    def medians(self) -> jax.Array:
        return self.quantiles[:, 0, 1]

    def likelihood(self, z: jax.Array) -> jax.Array:
        """Likelihood of the (noisy or quantized) values z (..., C), lower-bounded at 1e-9."""
        c = z.shape[-1]
        flat = jnp.moveaxis(z, -1, 0).reshape(c, 1, -1)
        lower = self.logits_cumulative(flat - 0.5)
        upper = self.logits_cumulative(flat + 0.5)
        sign = -jax.lax.stop_gradient(jnp.sign(lower + upper))
        lik = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
        lik = lower_bound(lik, LIKELIHOOD_BOUND)
        lik = lik.reshape((c, *z.shape[:-1]))
        return jnp.moveaxis(lik, 0, -1)

    def aux_loss(self) -> jax.Array:
        """Pull the three quantiles to the tail_mass/2, median, 1-tail_mass/2 points."""
        t = math.log(2.0 / self.tail_mass - 1.0)
        target = jnp.array([-t, 0.0, t], jnp.float32)
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return jnp.sum(jnp.abs(logits - target))

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.likelihood(z)


def quantize_around(z: jax.Array, medians: jax.Array) -> jax.Array:
    """z_hat = STE_round(z - med) + med (the value fed to h_s, in training too)."""
    return ste_round(z - medians) + medians


def channel_mask(num_channels: int, level: jax.Array, slice_width: int) -> jax.Array:
    """Boolean (C,) mask of the channels transmitted at `level` (traced): c < slice_width*level."""
    return jnp.arange(num_channels) < slice_width * jnp.asarray(level)


def bits(likelihoods: jax.Array) -> jax.Array:
    return -jnp.log(likelihoods) / np.log(2.0)
