"""Swin-v1 blocks as the official ProgSIC uses them (pre-norm, window attention, shifted windows).

Faithfulness notes (docs/MODEL.md §2; the official reference data exercises exactly these):
- Window size and shift are decided once from the *construction* resolution (the 256x256
  training crop), never from the runtime size: a block built for a grid larger than the window
  keeps shift = window/2 even when the runtime grid is smaller than the window.
- A runtime grid that is not a multiple of the window is zero-padded bottom/right after norm1.
  Padded tokens are not masked in unshifted blocks (they attend and are attended to, with
  q/k/v equal to the qkv bias); shifted blocks use the cyclic-shift mask of the padded grid.
- The blocks of a stage are one `nn.scan` over a single block (parameters stacked on a leading
  block axis) with "shifted" as scanned data: an unshifted block rolls by 0 and sees a single
  region (0.0 added to every logit), so the arithmetic is the official one.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from svi_jax.nn.layers import HIGHEST, gelu, layer_norm, linear, trunc_normal_init

SHIFT_MASK_VALUE = -100.0  # the official value added to logits of tokens from other regions


def resolve_window(construction_size: tuple[int, int], window: int, shift: int) -> tuple[int, int]:
    """Swin's rule: a grid no larger than the window is one window, unshifted."""
    if min(construction_size) <= window:
        return min(construction_size), 0
    return window, shift


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
    """(N, N) index into the (2w-1)^2 bias table, row-major over (dy, dx)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = flat[:, :, None] - flat[:, None, :] + (window - 1)
    return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


def _partition(x: np.ndarray | jax.Array, window: int):
    """(B, H, W, C) -> (B * nW, window*window, C), windows in raster order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b * (h // window) * (w // window), window * window, c)


def _merge(windows: jax.Array, window: int, h: int, w: int) -> jax.Array:
    nh, nw = h // window, w // window
    c = windows.shape[-1]
    x = windows.reshape(-1, nh, nw, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@functools.cache
def shifted_window_regions(h: int, w: int, window: int, shift: int) -> np.ndarray:
    """(nW, N) region label of each token of the rolled grid; tokens of different regions
    must not attend to each other (the official mask adds -100 to those logits)."""
    labels = np.zeros((1, h, w, 1), np.float32)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in bands:
        for ws in bands:
            labels[:, hs, ws, :] = region
            region += 1
    return _partition(labels, window)[..., 0]


def _attend(q, k, v, bias, regions, precision=HIGHEST, implementation=None):
    """Softmax attention of a group of windows. q, k, v: (G, N, heads, hd), q already scaled;
    bias: (heads, N, N) relative-position bias; regions: (G, N) or None -> (G, N, heads, hd).

    Computed by `jax.nn.dot_product_attention` (`implementation` None lets JAX choose the
    kernel: XLA today, a fused cuDNN kernel where it supports the shapes and dtype). The shift
    mask enters as an additive bias of -100 on cross-region logits, as in the official code, not
    as a boolean mask (which would give those logits exactly zero weight instead of ~e^-100).
    Logits and softmax are float32 for any operand dtype. With float32 operands
    dot_product_attention leaves the products' precision to jax's default matmul precision, so
    `precision` is set as that default around the call.
    """
    bias = bias[None]  # (1, heads, N, N)
    if regions is not None:
        cross = regions[:, None, :, None] != regions[:, None, None, :]  # (G, 1, N, N)
        bias = bias + jnp.where(cross, SHIFT_MASK_VALUE, 0.0)
    with jax.default_matmul_precision(precision.name.lower()):
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, scale=1.0, implementation=implementation
        )


class WindowAttention(nn.Module):
    """Multi-head attention inside each window, with the relative position bias.

    `attention_chunk_windows` > 0 evaluates the (heads, N, N) logits that many windows at a
    time under jax.checkpoint: at high resolution those logits are the largest tensors of the model
    (16 heads x 64 x 64 per window), and chunking bounds both the forward live set and what
    backprop keeps. Same arithmetic per window; only memory and scheduling change.
    The qkv and output projections and both attention products compute in `dtype` at
    `precision`; `implementation` is dot_product_attention's (None: JAX's choice).
    """

    dim: int
    num_heads: int
    window: int
    attention_chunk_windows: int = 0
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, regions: np.ndarray | None) -> jax.Array:
        n_win, n, c = x.shape
        heads = self.num_heads
        head_dim = c // heads
        table = self.param(
            "relative_position_bias_table",
            trunc_normal_init(0.02),
            ((2 * self.window - 1) ** 2, heads),
        )
        dense = functools.partial(linear, dtype=self.dtype, precision=self.precision)
        qkv = dense(3 * c, name="qkv")(x).reshape(n_win, n, 3, heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B*nW, N, heads, hd)
        q = q * head_dim**-0.5
        bias = table[relative_position_index(self.window).reshape(-1)]
        bias = bias.reshape(n, n, heads).transpose(2, 0, 1)
        reg = None
        if regions is not None:  # (nW, N) per image -> (B*nW, N); windows are image-major
            reg = jnp.tile(jnp.asarray(regions), (n_win // regions.shape[0], 1))
        attend = functools.partial(
            _attend, precision=self.precision, implementation=self.implementation
        )
        if self.attention_chunk_windows and n_win > self.attention_chunk_windows:
            # lax.map vmaps `one` over chunks of windows and scans over the chunks
            def one(a):
                r = None if reg is None else a[3][None]
                return attend(a[0][None], a[1][None], a[2][None], bias, r)[0]

            xs = (q, k, v) if reg is None else (q, k, v, reg)
            out = jax.lax.map(jax.checkpoint(one), xs, batch_size=self.attention_chunk_windows)
        else:
            out = attend(q, k, v, bias, reg)
        return dense(c, name="proj")(out.reshape(n_win, n, c))


class Mlp(nn.Module):
    hidden: int
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        dense = functools.partial(linear, dtype=self.dtype, precision=self.precision)
        x = dense(self.hidden, name="fc1")(x)
        x = gelu(x)
        return dense(d, name="fc2")(x)


class SwinBlock(nn.Module):
    """x + WindowAttn(LN(x)); x + MLP(LN(x)) on a (B, H, W, C) token grid.

    `window` and `shift` are the values already resolved from the construction size. With
    `shifted` (a traced bool scalar, as `swin_blocks` scans over the blocks of a stage) the
    block shifts by `shift` only where `shifted` is true; without it, by `shift` always.
    Norms, projections and attention compute in `dtype` at `precision` (layers.py's policy).
    """

    num_heads: int
    window: int
    shift: int
    mlp_ratio: float = 4.0
    attention_chunk_windows: int = 0
    dtype: object = jnp.float32
    precision: jax.lax.Precision = HIGHEST
    attention_implementation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, shifted: jax.Array | None = None) -> jax.Array:
        b, h, w, c = x.shape
        ws, shift = self.window, self.shift
        t = layer_norm("norm1", self.dtype)(x)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            t = jnp.pad(t, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        hp, wp = h + pad_h, w + pad_w
        regions = None
        if shift > 0:
            regions = shifted_window_regions(hp, wp, ws, shift)
            if shifted is not None:
                # Unshifted blocks of a scanned stage: roll by 0 and one region everywhere, so
                # no logit gets the mask (padded tokens stay unmasked, as in the official code).
                shift = jnp.where(shifted, shift, 0)
                regions = jnp.where(shifted, jnp.asarray(regions), 0.0)
            t = jnp.roll(t, (-shift, -shift), axis=(1, 2))
        attn = WindowAttention(
            c,
            self.num_heads,
            ws,
            self.attention_chunk_windows,
            self.dtype,
            self.precision,
            self.attention_implementation,
            name="attn",
        )
        t = _merge(attn(_partition(t, ws), regions), ws, hp, wp)
        if self.shift > 0:
            t = jnp.roll(t, (shift, shift), axis=(1, 2))
        x = x + t[:, :h, :w]
        mlp = Mlp(int(c * self.mlp_ratio), self.dtype, self.precision, name="mlp")
        return x + mlp(layer_norm("norm2", self.dtype)(x))


def _scan_body(block: SwinBlock, x: jax.Array, shifted: jax.Array):
    return block(x, shifted), None


def swin_blocks(
    x: jax.Array,
    depth: int,
    num_heads: int,
    window: int,
    construction_size: tuple[int, int],
    mlp_ratio: float,
    name: str = "blocks",
    remat: bool = False,
    attention_chunk_windows: int = 0,
    dtype=jnp.float32,
    precision: jax.lax.Precision = HIGHEST,
    attention_implementation: str | None = None,
) -> jax.Array:
    """Run the `depth` blocks of a stage (shift 0 on even, window//2 on odd blocks); call it
    inside a compact module.

    The blocks are one `nn.scan` over a single block whose parameters carry a leading `depth`
    axis (submodule `name`), with the shift as scanned data (block i is shifted iff i is odd):
    the graph holds one block per stage, not `depth`, whatever the depth (1 or 3 here).
    """
    ws, shift = resolve_window(construction_size, window, window // 2)
    block_cls = nn.remat(SwinBlock, prevent_cse=False) if remat else SwinBlock
    policy = (dtype, precision, attention_implementation)
    block = block_cls(num_heads, ws, shift, mlp_ratio, attention_chunk_windows, *policy, name=name)
    scan = nn.scan(
        _scan_body,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        length=depth,
    )
    shifted = jnp.asarray(np.arange(depth) % 2 == 1)
    return scan(block, x, shifted)[0]
