"""The progressive SIC model (ProgSIC) as one Flax linen module with named entry points.

Every entry point is a method usable through `model.apply(params, ..., method=...)`; the
functional wrappers in `svi_jax.forward` compose them. Tensors are NHWC; channel splits on
the last axis follow the official NCHW order (MODEL.md §2).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svi_jax.nn import initializers
from svi_jax.nn.context import ContextModel, EntropyParameters
from svi_jax.nn.entropy_models import EntropyBottleneck
from svi_jax.nn.hyperprior import HyperAnalysis, HyperSynthesis
from svi_jax.nn.layers import (
    HIGHEST,
    as_pair,
    attention_implementation,
    compute_dtype,
    matmul_precision,
)
from svi_jax.nn.transforms import AnalysisTransform, SynthesisTransform

DOWNSCALE_Y = 16  # g_a reduces each side by 16
DOWNSCALE_Z = 64  # h_a reduces y by 4 more; images must be a multiple of this


class ProgressiveSIC(nn.Module):
    latent_channels: int = 512
    num_slices: int = 16
    analysis_dims: Sequence[int] = (256, 384, 512, 512)
    analysis_depths: Sequence[int] = (1, 2, 2, 3)
    analysis_heads: Sequence[int] = (16, 16, 16, 16)
    synthesis_dims: Sequence[int] = (512, 512, 384, 256)
    synthesis_depths: Sequence[int] = (3, 2, 2, 1)
    synthesis_heads: Sequence[int] = (16, 16, 16, 16)
    window: int = 8
    mlp_ratio: float = 4.0
    construction_size: tuple[int, int] = (256, 256)
    bottleneck_filters: Sequence[int] = (3, 3, 3, 3)
    remat: bool = False
    attention_chunk_windows: int = 0
    # Precision policy (layers.py): compute dtype and product precision of every transform,
    # hyperprior, context and entropy-parameter layer; parameters stay float32, and y, z,
    # (sigma, mu), x_hat and the bottleneck / Gaussian likelihoods stay float32.
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST
    attention_implementation: str | None = None

    @property
    def slice_width(self) -> int:
        return self.latent_channels // self.num_slices

    @property
    def hyper_channels(self) -> int:
        return self.latent_channels * 3 // 4

    def setup(self):
        if self.latent_channels % self.num_slices:
            raise ValueError("latent_channels must be a multiple of num_slices")
        self.ga = AnalysisTransform(
            self.analysis_dims,
            self.analysis_depths,
            self.analysis_heads,
            self.window,
            self.construction_size,
            self.mlp_ratio,
            self.remat,
            self.attention_chunk_windows,
            *self._policy,
        )
        self.gs = SynthesisTransform(
            self.synthesis_dims,
            self.synthesis_depths,
            self.synthesis_heads,
            self.window,
            self.construction_size,
            self.mlp_ratio,
            self.remat,
            self.attention_chunk_windows,
            *self._policy,
        )
        policy = self._policy[:2]
        self.ha = HyperAnalysis(self.hyper_channels, *policy)
        self.hs = HyperSynthesis(self.latent_channels, *policy)
        # float32 at HIGHEST whatever the policy: the factorized density is the z rate
        self.entropy_bottleneck = EntropyBottleneck(self.hyper_channels, self.bottleneck_filters)
        self.context_model = ContextModel(self.num_slices, *policy)
        self.entropy_parameters = EntropyParameters(self.num_slices, *policy)

    @property
    def _policy(self) -> tuple:
        return (self.dtype, self.precision, self.attention_implementation)

    # --- entry points -------------------------------------------------------------------
    def analysis(self, x: jax.Array) -> jax.Array:
        """x (B, H, W, 3) in [0, 1], H and W multiples of 16 -> y (B, H/16, W/16, C)."""
        return self.ga(x)

    def hyper_analysis(self, y: jax.Array) -> jax.Array:
        return self.ha(y)

    def hyper_synthesis(self, z_hat: jax.Array) -> jax.Array:
        """z_hat -> hyper (B, h, w, 2C) = [sigma_hyper | mu_hyper]."""
        return self.hs(z_hat)

    def gaussian_params(self, hyper: jax.Array, y_hat: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(sigma, mu) of every latent from hyper and the causal context of y_hat."""
        return self.entropy_params_from_context(hyper, self.context_model(y_hat))

    def context(self, y_hat: jax.Array) -> jax.Array:
        return self.context_model(y_hat)

    def entropy_params_from_context(
        self, hyper: jax.Array, ctx: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        out = self.entropy_parameters(hyper, ctx)
        c = self.latent_channels
        return out[..., :c], out[..., c:]

    def synthesis(self, y_hat: jax.Array) -> jax.Array:
        """y_hat -> x_hat clamped to [0, 1]."""
        return jnp.clip(self.gs(y_hat), 0.0, 1.0)

    def z_likelihood(self, z: jax.Array) -> jax.Array:
        return self.entropy_bottleneck.likelihood(z)

    def z_medians(self) -> jax.Array:
        return self.entropy_bottleneck.medians()

    def aux_loss(self) -> jax.Array:
        return self.entropy_bottleneck.aux_loss()

    def __call__(self, x: jax.Array) -> jax.Array:
        """Touches every submodule once (used by `init`)."""
        y = self.analysis(x)
        z = self.hyper_analysis(y)
        _ = self.z_likelihood(z)
        hyper = self.hyper_synthesis(z)
        _ = self.gaussian_params(hyper, y)
        _ = self.aux_loss()
        return self.synthesis(y)


def rematerialise(setting: bool | str) -> bool:
    """`model.remat`: True/False, or "auto" = on for the CPU backend only.

    On XLA:CPU rematerialising the Swin blocks is what brings the paper step under 12 GiB
    (10.3 GiB vs 12.7 GiB peak, and no slower there); accelerators have the memory and would
    pay the recomputation, so "auto" leaves it off on GPU/TPU.
    """
    if isinstance(setting, bool):
        return setting
    word = str(setting).strip().lower()  # a command-line override of a str field arrives as text
    if word == "auto":
        return jax.default_backend() == "cpu"
    if word in ("true", "false"):
        return word == "true"
    raise ValueError(f'model.remat must be True, False or "auto", got {setting!r}')


# config.model fields given as words (the config's vocabulary) -> the module's values
_RESOLVERS = {
    "remat": rematerialise,
    "dtype": lambda v: compute_dtype(v) if isinstance(v, str) else v,
    "precision": lambda v: matmul_precision(v) if isinstance(v, str) else v,
    "attention_implementation": lambda v: attention_implementation(v or ""),
    "construction_size": as_pair,
}


def build_model(model_config: ml_collections.ConfigDict | dict) -> ProgressiveSIC:
    """ProgressiveSIC(**config.model): config and module fields carry the same names.

    The config states four fields as words (`dtype` "float32" | "bfloat16" | "auto",
    `precision` "highest" | "default", `remat` True | False | "auto", `attention_implementation`
    "" | "xla" | "cudnn"), resolved here for the current backend; lists (a config read back from
    JSON) become tuples so the module stays hashable for `jax.jit`'s static arguments. Raises
    ValueError naming an unknown field or an invalid word.
    """
    fields = dict(model_config.items())
    known = {f.name for f in dataclasses.fields(ProgressiveSIC)} - {"parent", "name"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown config model field(s) {unknown}; known: {sorted(known)}")
    for key, value in fields.items():
        if isinstance(value, list):
            fields[key] = tuple(value)
        if key in _RESOLVERS:
            fields[key] = _RESOLVERS[key](fields[key])
    return ProgressiveSIC(**fields)


def _read_plan(model: ProgressiveSIC, image_size: int) -> initializers.Plan:
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return initializers.plan_of(lambda k, x: model.init(k, x)["params"], jax.random.PRNGKey(0), x)


_plan = functools.lru_cache(maxsize=16)(_read_plan)  # a model with list fields is unhashable


def _check_init_args(rng, image_size) -> int:
    """image_size as an int; one-line TypeError/ValueError for anything init_params can't use."""
    dtype, shape = getattr(rng, "dtype", None), getattr(rng, "shape", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        is_key = shape == ()  # one typed key (a batch of keys: jax.vmap over them)
    else:  # raw key data of the default implementation, e.g. jax.random.PRNGKey(seed)
        raw = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
        is_key = dtype == jnp.uint32 and shape == tuple(raw)
    if not is_key:
        raise TypeError(
            "init_params needs one JAX PRNG key (jax.random.key(seed) or "
            f"jax.random.PRNGKey(seed)), got {type(rng).__name__} {dtype} {shape}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"init_params: image_size must be a Python int, got {image_size!r}")
    if image_size < 64 or image_size % 64:
        raise ValueError(
            f"init_params: image_size must be a positive multiple of 64, got {image_size}"
        )
    return int(image_size)


def init_params(model: ProgressiveSIC, rng: jax.Array, image_size: int = 64) -> dict:
    """Fresh parameters for `model`: a dict tree of float32 arrays, drawn from `rng` (a key from
    jax.random.key or jax.random.PRNGKey). Shapes do not depend on `image_size` (a multiple of
    64, static), which only sizes the abstract trace that reads them.

    Every parameter is drawn from its official (PyTorch) law, `svi_jax.nn.initializers`: the
    model is traced once abstractly (nothing compiled) to read each parameter's law, and all
    of them are drawn from two flat vectors (`initializers.draw_params`). Eager, nothing is
    compiled per parameter: paper model 2.1-2.5 s cold on 2 idle CPU cores, up to 3.7 s with the
    other core busy (Flax's jitted `model.init`: 9.5 s idle); under jit, eval_shape or vmap (the
    key passed in or closed over) one program of per-parameter slices compiles too (1.2 s idle,
    2.4 s loaded). Same values either way.
    Deviation, named: the laws are Flax's `model.init`'s but the values are not (Flax gives
    each parameter its own key); `flax_init_params` gives Flax's values. Raises TypeError for
    anything but one key (a batch of keys: `jax.vmap` over them) or a non-int image_size,
    ValueError for an image_size that is not a positive multiple of 64.
    """
    size = _check_init_args(rng, image_size)
    try:
        hash(model)
    except TypeError:  # a list field (build_model makes tuples): read the laws uncached
        plan = _read_plan(model, size)
    else:
        plan = _plan(model, size)
    return initializers.draw_params(plan, rng)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _flax_init(model: ProgressiveSIC, rng: jax.Array, image_size: int) -> dict:
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return model.init(rng, x)["params"]


def flax_init_params(model: ProgressiveSIC, rng: jax.Array, image_size: int = 64) -> dict:
    """Flax's own draw, `model.init(rng, x)["params"]` through one jit (each parameter with its
    own folded key; an eager `model.init` may differ by float32 rounding, ~1e-8): the laws of
    `init_params`, other values. svi-jax's `init_params` before issue 9's change; the committed
    golden codec files were made from it (PRNGKey(0), tiny). Compiling it is slow (paper model:
    373 distinct kernels, 9.5 s cold on 2 idle CPU cores, 17 s loaded; an eager `model.init` of
    even the tiny model takes ~40 s).
    """
    return _flax_init(model, rng, image_size)
