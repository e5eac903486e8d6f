"""Parameter initializers that name their distribution, and a whole-model draw built on them.

Why (issue 9: the paper model's `init_params` took 9.5 s on a 2-core CPU, 39.5 s on an H200):
Flax's `model.init` draws every parameter with its own key (a `fold_in` of the parameter's
path) and its own random kernel, so XLA compiled 373 distinct kernels (93 `fold_in`s, 183
per-shape draws) to initialise 87 M numbers. Here each initializer is still an ordinary Flax
initializer (`init(key, shape, dtype)`: `model.init` gives the values it always gave), and it
also says which law it draws from for a shape (`law(shape)`): a constant, U(-b, b), or
N(0, s^2) clipped at +-c. `draw_params` reads the law of every parameter from one abstract
trace of `model.init` (nothing compiled) and draws the whole model from two flat vectors, one
U(-1, 1) and one N(0, 1), together one small program; a parameter is then a slice of one of
them times its scale (one float32 rounding, the same on the host and inside jit).

The laws are PyTorch's (the official code's `_init_weights`, `nn.Conv2d`/`nn.Linear`
defaults, `kaiming_normal_`, CompressAI's EntropyBottleneck); `tests/test_init.py` checks
each layer's draw against the PyTorch formula and every parameter against `model.init`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from flax.core import meta

from svi_jax.tracing import traced


class _Initializer:
    """A Flax initializer (`init(key, shape, dtype)`, drawing with `draw`) that also names the
    law it draws from for a shape (`law`, the initializer itself unless the law depends on the
    shape). While `plan_of` records, it returns that law boxed with an abstract value instead."""

    def __call__(self, key, shape, dtype=jnp.float32) -> jax.Array:
        if _recording_now():
            return _WithLaw(jnp.zeros(shape, dtype), self.law(shape))
        return self.draw(key, shape, dtype)

    def law(self, shape) -> Law:
        return self


@dataclasses.dataclass(frozen=True)
class Constant(_Initializer):
    """Every element `value` (a float, or a tuple broadcast along the trailing axes): LayerNorm
    (1, 0), zero biases, CompressAI's bottleneck matrices/factors and quantiles (-s, 0, s).
    A tuple that does not broadcast to the shape raises jax's/numpy's ValueError."""

    value: float | tuple[float, ...]

    def draw(self, key, shape, dtype) -> jax.Array:
        return jnp.broadcast_to(jnp.asarray(self.value, dtype), shape)


@dataclasses.dataclass(frozen=True)
class Uniform(_Initializer):
    """U(-bound, bound), elementwise independent: PyTorch's default Conv/Linear init
    (bound 1/sqrt(fan_in), via VarianceScaling for weights) and CompressAI's bottleneck biases
    (bound 0.5). float32 values for the default dtype."""

    bound: float

    def draw(self, key, shape, dtype) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -self.bound, self.bound)


@dataclasses.dataclass(frozen=True)
class Normal(_Initializer):
    """N(0, std^2), clipped to [-clip, clip] in absolute value when `clip` is given (timm's
    `trunc_normal_(std=.02)` cuts at +-2: at 100 std that clip never binds)."""

    std: float
    clip: float | None = None

    def draw(self, key, shape, dtype) -> jax.Array:
        x = self.std * jax.random.normal(key, shape, dtype)
        return x if self.clip is None else jnp.clip(x, -self.clip, self.clip)


@dataclasses.dataclass(frozen=True)
class VarianceScaling(_Initializer):
    """`jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)` for
    distribution "uniform" or "normal" (its values, bit for bit), whose law depends on the shape:
    variance = scale / fan, U(+-sqrt(3 variance)) or N(0, variance). jax's "truncated_normal"
    is refused (ValueError): no svi-jax layer uses it, and the flat draws have no such vector."""

    scale: float
    mode: str  # "fan_in" | "fan_out" | "fan_avg"
    distribution: str  # "uniform" | "normal"
    in_axis: int = -2
    out_axis: int = -1

    def __post_init__(self):
        if self.mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling mode must be fan_in|fan_out|fan_avg: {self.mode!r}")
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(
                f"VarianceScaling distribution must be uniform|normal: {self.distribution!r}"
            )

    def draw(self, key, shape, dtype) -> jax.Array:
        init = nn.initializers.variance_scaling(
            self.scale, self.mode, self.distribution, in_axis=self.in_axis, out_axis=self.out_axis
        )
        return init(key, shape, dtype)

    def law(self, shape) -> Uniform | Normal:
        shape = tuple(shape)
        receptive = math.prod(shape) // (shape[self.in_axis] * shape[self.out_axis])
        fan_in, fan_out = shape[self.in_axis] * receptive, shape[self.out_axis] * receptive
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(fan, 1)
        if self.distribution == "uniform":
            return Uniform(math.sqrt(3.0 * variance))
        return Normal(math.sqrt(variance))


Law = Constant | Uniform | Normal

# --- recording: `model.init` under jax.eval_shape, each parameter boxed with its law ---------

_STATE = threading.local()  # recording is per thread: another thread's model.init is untouched


def _recording_now() -> bool:
    return getattr(_STATE, "recording", False)


class _WithLaw(struct.PyTreeNode, meta.AxisMetadata):
    """A parameter's (abstract) value and its law. Flax keeps AxisMetadata boxes in the
    variables it returns, through nn.scan and nn.remat (a stacked parameter keeps its per-layer
    law: the draws are elementwise independent)."""

    value: Any
    law: Any = struct.field(pytree_node=False)

    def unbox(self):
        return self.value

    def replace_boxed(self, val):
        return self.replace(value=val)

    def add_axis(self, index, params):
        return self

    def remove_axis(self, index, params):
        return self


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    before, _STATE.recording = _recording_now(), True
    try:
        yield
    finally:
        _STATE.recording = before


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where each parameter comes from: `treedef` of the parameter tree; per leaf (in
    `jax.tree` order) its shape, dtype, law and offset into its flat vector (the uniform one for
    Uniform, the normal one for Normal; none for Constant); the two vectors' lengths."""

    treedef: Any
    leaves: tuple[tuple[tuple[int, ...], Any, Law, int], ...]
    n_uniform: int
    n_normal: int


def plan_of(init_fn, *args) -> Plan:
    """The Plan of the parameters `init_fn(*args)` returns (e.g. `lambda: model.init(...)`),
    read from one abstract evaluation (`jax.eval_shape`: traced, not compiled or run).

    Raises TypeError naming every parameter whose initializer is not one of this module's
    (its law is unknown, so it cannot be drawn from the flat vectors).
    """
    with _recording():  # a fresh function: jax must not reuse a trace made without recording
        boxed = jax.eval_shape(lambda *a: init_fn(*a), *args)
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        boxed, is_leaf=lambda x: isinstance(x, _WithLaw)
    )
    unnamed = [jax.tree_util.keystr(path) for path, leaf in flat if not isinstance(leaf, _WithLaw)]
    if unnamed:
        raise TypeError(
            f"parameters {unnamed} use initializers that do not name their law; use "
            "svi_jax.nn.initializers (Constant, Uniform, Normal, VarianceScaling)"
        )
    leaves, offsets = [], {Uniform: 0, Normal: 0}
    for _, box in flat:
        shape, size = tuple(box.value.shape), math.prod(box.value.shape)
        # the flat vector a leaf is cut from, by isinstance as _cut reads it (a subclass of
        # Uniform takes its own slice of the uniform vector, not the first leaf's)
        kind = next((k for k in offsets if isinstance(box.law, k)), None)
        offset = 0 if kind is None else offsets[kind]
        if kind is not None:
            offsets[kind] += size
        leaves.append((shape, box.value.dtype, box.law, offset))
    return Plan(treedef, tuple(leaves), offsets[Uniform], offsets[Normal])


@functools.partial(jax.jit, static_argnums=(1, 2))
@traced("init_params/flat_draws")
def _flat_draws(rng: jax.Array, n_uniform: int, n_normal: int) -> tuple[jax.Array, jax.Array]:
    """U(-1, 1) of length n_uniform and N(0, 1) of length n_normal, float32 (one program per
    model: the two lengths are its only shapes)."""
    k_uniform, k_normal = jax.random.split(rng)
    uniform = jax.random.uniform(k_uniform, (n_uniform,), jnp.float32, -1.0, 1.0)
    return uniform, jax.random.normal(k_normal, (n_normal,), jnp.float32)


def draw_params(plan: Plan, rng: jax.Array) -> Any:
    """The parameter tree of `plan`, drawn from `rng` (a jax PRNG key, raw or typed).

    Eager, the two flat draws are one compiled program (25 distinct XLA:CPU kernels whatever the
    model) and the slicing and scaling run in numpy on the host, nothing per parameter to
    compile; the tree lands where the key is (committed to a device, or replicated), else on
    the default device. Inside a trace (jit, eval_shape, vmap, checkpoint; the key passed in or
    closed over) the same slices and products are jax ops, one jitted program (paper or tiny:
    124 distinct kernels, 1.2 s to compile on 2 idle cores). Both give the same float32 values: a
    draw is one product (Uniform: bound * U(-1, 1); Normal: std * N(0, 1), then the clip).
    A batch of keys outside jax.vmap raises jax's key-shape error from jax.random.split.
    """
    uniform, normal = _flat_draws(rng, plan.n_uniform, plan.n_normal)
    if isinstance(uniform, jax.core.Tracer):  # traced, whether or not the key itself is
        return _cut_traced(plan, uniform, normal)
    return _put(_cut(plan, np.asarray(uniform), np.asarray(normal), np), rng)


def _cut(plan: Plan, uniform, normal, xp) -> Any:
    """The parameters as slices of the flat draws times their scales, in numpy (xp=np) or jax."""
    out = []
    for shape, dtype, law, offset in plan.leaves:
        size = math.prod(shape)
        if isinstance(law, Constant):
            value = xp.broadcast_to(xp.asarray(law.value, np.float32), shape)
        elif isinstance(law, Uniform):
            value = np.float32(law.bound) * uniform[offset : offset + size].reshape(shape)
        else:
            value = np.float32(law.std) * normal[offset : offset + size].reshape(shape)
            if law.clip is not None:
                value = xp.clip(value, -np.float32(law.clip), np.float32(law.clip))
        out.append(value.astype(dtype) if xp is jnp else np.array(value, dtype))
    return jax.tree_util.tree_unflatten(plan.treedef, out)


# One program for the traced case: under an eager jax.vmap over keys (an ensemble) the slices
# would otherwise run op by op.
_cut_traced = jax.jit(
    traced("init_params/cut")(lambda plan, uniform, normal: _cut(plan, uniform, normal, jnp)),
    static_argnums=0,
)


def _put(tree, rng) -> Any:
    """The host tree on the devices jit would have put it: with the key when the key is
    committed to a device or replicated over several, else on the default device. A sharding
    that spans processes gets each leaf from this process's copy (jax.device_put would check
    every leaf's equality across hosts: one collective and one compile per parameter)."""
    if not (isinstance(rng, jax.Array) and rng.committed and rng.sharding.is_fully_replicated):
        return jax.device_put(tree)
    sharding = rng.sharding
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda a: jax.make_array_from_callback(a.shape, sharding, lambda index: a[index]), tree
    )
