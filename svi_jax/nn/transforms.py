"""Analysis g_a (image -> y, /16) and synthesis g_s (y -> image, x16) transforms (MODEL.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from svi_jax.nn.layers import HIGHEST, TorchConv2d, layer_norm, linear
from svi_jax.nn.swin import swin_blocks


def patch_merge(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, 4C), Swin order [(0,0), (1,0), (0,1), (1,1)] (row, col)."""
    return jnp.concatenate(
        [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1
    )


def pixel_shuffle(x: jax.Array, r: int = 2) -> jax.Array:
    """PyTorch PixelShuffle on NHWC: out[2h+i, 2w+j, c] = in[h, w, 4c + 2i + j] (r = 2).

    This is NOT TF's depth_to_space order (which takes the channel as (i*r + j)*C_out + c).
    """
    b, h, w, c = x.shape
    co = c // (r * r)
    x = x.reshape(b, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, co)


class PatchMerging(nn.Module):
    out_dim: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = layer_norm("norm", self.dtype)(patch_merge(x))
        return linear(self.out_dim, False, "reduction", self.dtype, self.precision)(x)


class PatchReverseMerging(nn.Module):
    out_dim: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = layer_norm("norm", self.dtype)(pixel_shuffle(x, 2))
        return linear(self.out_dim, False, "increment", self.dtype, self.precision)(x)


class PatchEmbed(nn.Module):
    embed_dim: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = TorchConv2d(
            self.embed_dim, 2, 2, dtype=self.dtype, precision=self.precision, name="proj"
        )
        return layer_norm("norm", self.dtype)(conv(x))


def _check_divisible(h: int, w: int, factor: int, what: str) -> None:
    if h % factor or w % factor:
        raise ValueError(
            f"{what} needs height and width divisible by {factor}, got {h}x{w}; "
            "pad the image first (svi_jax.pad_to_multiple)"
        )


class _SwinStack(nn.Module):
    """Fields shared by both transforms (per-stage lists, outermost stage first).

    `dtype`/`precision`: the compute policy of every layer (layers.py). Whatever `dtype`, the
    analysis returns y in float32 (its last LayerNorm computes in float32: y is rounded and its
    likelihoods are the rates) and the synthesis returns x_hat in float32 (its last conv
    accumulates and stores in float32: the clamp and the distortion see full precision).
    """

    dims: Sequence[int]
    depths: Sequence[int]
    heads: Sequence[int]
    window: int
    construction_size: tuple[int, int]
    mlp_ratio: float = 4.0
    remat: bool = False
    attention_chunk_windows: int = 0
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST
    attention_implementation: str | None = None

    def _policy(self) -> dict:
        return {
            "dtype": self.dtype,
            "precision": self.precision,
            "attention_implementation": self.attention_implementation,
        }


class AnalysisTransform(_SwinStack):
    """PatchEmbed (/2) -> stage 0 blocks -> [PatchMerging (/2) + blocks] x3 -> LayerNorm."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.dims)
        _check_divisible(x.shape[1], x.shape[2], 2**n, "the analysis transform")
        x = PatchEmbed(self.dims[0], self.dtype, self.precision, name="patch_embed")(x)
        h0, w0 = self.construction_size
        for i in range(n):
            stage_hw = (h0 // 2 ** (i + 1), w0 // 2 ** (i + 1))
            if i > 0:
                x = PatchMerging(
                    self.dims[i], self.dtype, self.precision, name=f"layers_{i}_downsample"
                )(x)
            x = swin_blocks(
                x,
                self.depths[i],
                self.heads[i],
                self.window,
                stage_hw,
                self.mlp_ratio,
                name=f"layers_{i}_blocks",
                remat=self.remat,
                attention_chunk_windows=self.attention_chunk_windows,
                **self._policy(),
            )
        return layer_norm("norm", jnp.float32)(x)  # y stays float32 (see _SwinStack)


class SynthesisTransform(_SwinStack):
    """[blocks + PatchReverseMerging (x2)] x4 -> Conv 3x3 to RGB (unclamped)."""

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        n = len(self.dims)
        h0, w0 = self.construction_size
        x = y
        for i in range(n):
            stage_hw = (h0 // 2 ** (n - i), w0 // 2 ** (n - i))
            x = swin_blocks(
                x,
                self.depths[i],
                self.heads[i],
                self.window,
                stage_hw,
                self.mlp_ratio,
                name=f"layers_{i}_blocks",
                remat=self.remat,
                attention_chunk_windows=self.attention_chunk_windows,
                **self._policy(),
            )
            out_dim = self.dims[i + 1] if i + 1 < n else self.dims[-1]
            x = PatchReverseMerging(
                out_dim, self.dtype, self.precision, name=f"layers_{i}_upsample"
            )(x)
        out = TorchConv2d(
            3,
            kernel_size=3,
            padding=1,
            dtype=self.dtype,
            precision=self.precision,
            out_dtype=jnp.float32,  # x_hat in float32 (see _SwinStack)
            name="outconv",
        )
        return out(x)
