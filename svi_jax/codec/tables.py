"""Probability tables of the factorized prior of ẑ, as a pure function of the parameters.

The symbol of channel c is k = round(z − median_c) (so ẑ = k + median_c, exactly the value
`quantize_around` feeds h_s). Its table holds the model's likelihood of median_c + k for k in
[−ceil(median − q_low), ceil(q_high − median)], q_low/q_high being the bottleneck's learned
tail quantiles (CompressAI's pmf range); the mass outside goes to the coder's escape symbols.
No `update()` step: the tables are recomputed from the parameters whenever they are needed,
by the same jitted function on the same inputs at encode and decode time, so they are
bit-identical on one platform.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.nn.model import ProgressiveSIC

# Cap on the per-channel half range: wider distributions still code exactly (escapes).
MAX_HALF_RANGE = 1024


class TableError(ValueError):
    """The bottleneck parameters cannot define coding tables (non-finite quantiles)."""


def _half_ranges(quantiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(quantiles, np.float32).reshape(-1, 3)
    if not np.all(np.isfinite(q)):
        raise TableError("entropy bottleneck quantiles are not finite")
    below = np.ceil(np.clip(q[:, 1] - q[:, 0], 0, MAX_HALF_RANGE)).astype(np.int64)
    above = np.ceil(np.clip(q[:, 2] - q[:, 1], 0, MAX_HALF_RANGE)).astype(np.int64)
    return below, above


@functools.partial(jax.jit, static_argnames=("model", "size"))
def _table_likelihoods(model: ProgressiveSIC, params: dict, starts: jax.Array, size: int):
    medians = model.apply({"params": params}, method=ProgressiveSIC.z_medians)
    k = jnp.arange(size, dtype=jnp.float32)[:, None] + starts.astype(jnp.float32)[None, :]
    values = medians[None, :] + k  # (size, C)
    lik = model.apply({"params": params}, values, method=ProgressiveSIC.z_likelihood)
    return lik.T  # (C, size)


def z_tables(model: ProgressiveSIC, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """-> (pmf float64 (C, K), offsets int64 (C,)): pmf[c, k] is P(symbol = offsets[c] + k)."""
    quantiles = np.asarray(params["entropy_bottleneck"]["quantiles"])
    below, above = _half_ranges(quantiles)
    size = int((below + above).max()) + 1
    starts = -below
    lik = np.asarray(_table_likelihoods(model, params, jnp.asarray(starts, jnp.int32), size))
    lik = lik.astype(np.float64)
    valid = np.arange(size)[None, :] <= (below + above)[:, None]
    pmf = np.where(valid, lik, 0.0)
    return pmf, starts.astype(np.int64)


def z_medians(model: ProgressiveSIC, params: dict) -> np.ndarray:
    return np.asarray(model.apply({"params": params}, method=ProgressiveSIC.z_medians))
