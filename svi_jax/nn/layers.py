"""Small building blocks shared by the transforms: PyTorch-compatible init, LayerNorm, convs.

The official model is PyTorch; its checkpoints must convert by transposes alone, so layers here
keep PyTorch's numerics (LayerNorm eps 1e-5, explicit conv paddings, exact GELU) and its
initialisation distributions.

Precision policy (config `model.dtype`, `model.precision`): every layer here takes a compute
`dtype` (float32 or bfloat16; parameters are always stored in float32 and cast at use) and the
`precision` of its products (jax.lax.Precision.HIGHEST or DEFAULT). The defaults, float32 and
HIGHEST, are the numerics the reference-equivalence tests check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from svi_jax.nn.initializers import Constant, Normal, Uniform, VarianceScaling

LN_EPS = 1e-5  # PyTorch nn.LayerNorm default (Flax's is 1e-6).

DTYPES = ("float32", "bfloat16", "auto")
PRECISIONS = ("highest", "default")
ATTENTION_IMPLEMENTATIONS = ("", "xla", "cudnn")
HIGHEST = jax.lax.Precision.HIGHEST


def compute_dtype(name: str, backend: str | None = None) -> jnp.dtype:
    """The compute dtype named by config `model.dtype`.

    "auto" is bfloat16 on accelerators (GPU, TPU: bf16 tensor-core / MXU rates) and float32 on
    CPU, where XLA emulates bf16 products and they run slower than float32. The backend is
    `jax.default_backend()` unless given. Raises ValueError naming the field otherwise.
    """
    if name not in DTYPES:
        raise ValueError(f"config model.dtype must be one of {DTYPES}, got {name!r}")
    if name == "auto":
        name = "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"
    return jnp.dtype(name)


def matmul_precision(name: str) -> jax.lax.Precision:
    """config `model.precision` -> jax.lax.Precision.

    "highest": full float32 products everywhere (no TF32 on GPUs, 6-pass bf16 on TPUs); the
    reference numerics. "default": the backend's fast path for float32 operands (TF32 on
    Ampere+ GPUs, one bf16 pass on TPUs; no change on CPU). With bfloat16 operands both are
    bf16 products with float32 accumulation.
    """
    if name not in PRECISIONS:
        raise ValueError(f"config model.precision must be one of {PRECISIONS}, got {name!r}")
    return HIGHEST if name == "highest" else jax.lax.Precision.DEFAULT


def attention_implementation(name: str) -> str | None:
    """config `model.attention_implementation` -> jax.nn.dot_product_attention's argument.

    "" lets JAX choose (XLA in jax 0.10); "xla" forces XLA; "cudnn" forces cuDNN's fused
    kernel (GPU only, bfloat16 compute).
    """
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"config model.attention_implementation must be one of "
            f"{ATTENTION_IMPLEMENTATIONS}, got {name!r}"
        )
    return name or None


def trunc_normal_init(std: float = 0.02, bound: float = 2.0) -> Normal:
    """timm's trunc_normal_(std): a normal cut at +-`bound` in absolute value (not in stds)."""
    return Normal(std, clip=bound)


# Kernel inits read their fans from the kernel shape (jax.nn.initializers.variance_scaling).
# Kernels are HWIO; a transposed conv's kernel is (kH, kW, in, out) too, but PyTorch takes the
# fans of its (in, out, kH, kW) weight from the other ends (fan_in = out * k * k, fan_out =
# in * k * k), so there the in/out axes swap.
_HWIO_AXES = {"in_axis": -2, "out_axis": -1}
_TRANSPOSED_AXES = {"in_axis": -1, "out_axis": -2}


def torch_default_kernel_init(transposed: bool = False) -> VarianceScaling:
    """PyTorch's default Conv/Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (torch's kaiming_uniform_(a=sqrt(5)); as variance_scaling: variance 1/(3 fan_in), uniform.)
    """
    axes = _TRANSPOSED_AXES if transposed else _HWIO_AXES
    return VarianceScaling(1.0 / 3.0, "fan_in", "uniform", **axes)


def kaiming_normal_fan_out(gain: float, transposed: bool = False) -> VarianceScaling:
    """torch.nn.init.kaiming_normal_(mode="fan_out") with `gain`: N(0, gain / sqrt(fan_out))."""
    axes = _TRANSPOSED_AXES if transposed else _HWIO_AXES
    return VarianceScaling(gain**2, "fan_out", "normal", **axes)


def torch_default_bias_init(fan_in: int) -> Uniform:
    """PyTorch's default Conv/Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    The fan is the weight's, which a bias's own shape cannot give; so it is passed in.
    """
    return Uniform(1.0 / math.sqrt(max(fan_in, 1)))


def _row_mean(x: jax.Array) -> jax.Array:
    """Mean over the last axis, shape x.shape[:-1]."""
    return jnp.sum(x, axis=-1) * (1.0 / x.shape[-1])


def _over_rows(stat: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    # lax broadcasts: jnp's keepdims form lowers to a reshape and two broadcasts per statistic
    return jax.lax.broadcast_in_dim(stat, shape, tuple(range(len(shape) - 1)))


def _over_channels(vec: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.lax.broadcast_in_dim(vec, shape, (len(shape) - 1,))


def _normalize(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    """((x - mean) / sqrt(var + eps) over the last axis, 1 / sqrt(var + eps) of shape
    x.shape[:-1]), with PyTorch's two-pass (biased) variance."""
    centred = x - _over_rows(_row_mean(x), x.shape)
    rstd = jax.lax.rsqrt(_row_mean(centred * centred) + eps)
    return centred * _over_rows(rstd, x.shape), rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine_layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    return _affine_layer_norm_fwd(x, scale, bias, eps)[0]  # unused residuals: dead code


def _affine_layer_norm_fwd(x, scale, bias, eps):
    normed, rstd = _normalize(x, eps)
    y = normed * _over_channels(scale, x.shape) + _over_channels(bias, x.shape)
    return y, (normed, rstd, scale)


def _affine_layer_norm_bwd(eps, residuals, dy):
    # The closed-form LayerNorm gradient: dx = rstd * (g - mean(g) - x^ * mean(g * x^)) with
    # g = dy * scale. Autodiff of the forward gives the same values through more HLO.
    normed, rstd, scale = residuals
    shape = dy.shape
    g = dy * _over_channels(scale, shape)
    mean_g, mean_gx = _row_mean(g), _row_mean(g * normed)
    dx = _over_rows(rstd, shape) * (
        g - _over_rows(mean_g, shape) - normed * _over_rows(mean_gx, shape)
    )
    batch_axes = tuple(range(dy.ndim - 1))
    return dx, jnp.sum(dy * normed, axis=batch_axes), jnp.sum(dy, axis=batch_axes)


_affine_layer_norm.defvjp(_affine_layer_norm_fwd, _affine_layer_norm_bwd)


class LayerNorm(nn.Module):
    """PyTorch's `nn.LayerNorm(C)` over the last axis of (..., C): (x - E[x]) / sqrt(Var[x] +
    eps) * scale + bias, Var the biased two-pass variance (PyTorch's; Flax's LayerNorm uses
    E[x^2] - E[x]^2). Statistics and the affine map compute in float32 whatever the input
    dtype; the output has `dtype`. Parameters "scale" (ones) and "bias" (zeros), (C,) float32,
    named as Flax's LayerNorm names them (checkpoints and weight import unchanged).

    The gradient is the closed form (custom VJP): fwd + bwd lower to ~half the HLO instructions
    of Flax's LayerNorm, and LayerNorms were a third of the tiny training step's HLO
    (tests/test_compile.py).
    """

    epsilon: float = LN_EPS
    dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", Constant(1.0), (c,), jnp.float32)
        bias = self.param("bias", Constant(0.0), (c,), jnp.float32)
        y = _affine_layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon)
        return y.astype(self.dtype)


def layer_norm(name: str | None = None, dtype=jnp.float32) -> LayerNorm:
    """PyTorch-eps LayerNorm (`LayerNorm`); statistics in float32, output in `dtype`."""
    return LayerNorm(LN_EPS, dtype, name=name)


def linear(
    features: int,
    use_bias: bool = True,
    name: str | None = None,
    dtype=jnp.float32,
    precision: jax.lax.Precision = HIGHEST,
) -> nn.Dense:
    """nn.Linear as in the Swin code: trunc-normal(.02) weights, zero bias; computes in `dtype`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        precision=precision,
        kernel_init=trunc_normal_init(0.02),
        bias_init=Constant(0.0),
        name=name,
    )


class TorchConv2d(nn.Module):
    """nn.Conv2d with explicit symmetric padding (NHWC, HWIO kernel).

    Flax 'SAME' at stride 2 pads (1, 2) instead of PyTorch's (2, 2) and shifts the sampling grid,
    so padding is always explicit here. Input and kernel are cast to `dtype`; the result is
    `out_dtype` (default `dtype`): bf16 products accumulate in float32 either way, so a float32
    `out_dtype` costs nothing but the wider store (used where the output feeds the entropy
    models or the loss).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    kernel_init: object = None
    bias_init: object = None
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST
    out_dtype: object = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        in_ch = x.shape[-1]
        fan_in = in_ch // self.groups * k * k
        kernel = self.param(
            "kernel",
            self.kernel_init or torch_default_kernel_init(),
            (k, k, in_ch // self.groups, self.features),
        )
        bias_init = self.bias_init or torch_default_bias_init(fan_in)
        bias = self.param("bias", bias_init, (self.features,))
        p = self.padding
        dtype = jnp.dtype(self.dtype)
        out_dtype = dtype if self.out_dtype is None else jnp.dtype(self.out_dtype)
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.groups,
            precision=self.precision,
            preferred_element_type=None if out_dtype == dtype else out_dtype,
        )
        return y + bias.astype(out_dtype)


class TorchConvTranspose2d(nn.Module):
    """nn.ConvTranspose2d(k, stride, padding, output_padding), NHWC.

    The kernel is stored as (kH, kW, in, out), the PyTorch (in, out, kH, kW) tensor transposed
    by (2, 3, 0, 1), so official weights convert by a transpose; the spatial flip that turns a
    transposed convolution into a dilated convolution happens here, at call time.
    Output size: (H - 1) * stride - 2 * padding + k + output_padding. Computes in `dtype`.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    kernel_init: object = None
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        in_ch = x.shape[-1]
        # PyTorch computes ConvTranspose fan_in from weight.size(1) = out channels.
        fan_in = self.features * k * k
        kernel = self.param(
            "kernel",
            self.kernel_init or torch_default_kernel_init(transposed=True),
            (k, k, in_ch, self.features),
        )
        bias = self.param("bias", torch_default_bias_init(fan_in), (self.features,))
        lo = k - 1 - self.padding
        hi = k - 1 - self.padding + self.output_padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel[::-1, ::-1].astype(self.dtype),
            window_strides=(1, 1),
            padding=((lo, hi), (lo, hi)),
            lhs_dilation=(self.stride, self.stride),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=self.precision,
        )
        return y + bias.astype(self.dtype)


_SQRT_HALF = 0.7071067811865476


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)), elementwise, in x's dtype.

    This is the formula PyTorch's `nn.GELU()` (the official Swin MLP) evaluates. `jax.nn.gelu(x,
    approximate=False)` is the same function written with erfc, whose lowering expands into a
    ~120-instruction polynomial where `lax.erf` is one HLO instruction: 12 instead of 128
    instructions per GELU, ~2,000 fewer in the tiny training step (tests/test_compile.py).
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


def leaky_relu(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, negative_slope=0.01)  # PyTorch default slope


def as_pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))
