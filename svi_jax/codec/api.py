"""Real progressive coding: compress / decompress / truncate / info (format: docs/FORMAT.md).

Device side (jitted): g_a and h_a, h_s, the wavefront (μ, σ) steps, g_s. Host side: the range
coder (`svi_jax.codec.range_coding`). ẑ is coded with the factorized prior (tables from
`tables.z_tables`, a pure function of the parameters); each slice of ŷ = round(y) with its
Gaussian (μ, max(σ, 0.11)) in wavefront order, one chunk per wavefront step. The encoder runs
the decoder's sequential path (same jitted functions, same inputs, step by step), so the
coder sees bit-identical parameters on both sides.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svi_jax.codec import banded
from svi_jax.codec import format as fmt
from svi_jax.codec.range_coding import EntropyCodingError, StreamDecoder, StreamEncoder
from svi_jax.codec.tables import z_medians, z_tables
from svi_jax.codec.wavefront import (
    coding_params,
    raster_schedule,
    schedule_counts,
    slice_prologue,
    wavefront_schedule,
    wavefront_step,
)
from svi_jax.data.image_io import to_rgb8
from svi_jax.forward import compose_level_latent, sample_details
from svi_jax.nn.entropy_models import SCALE_BOUND
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC, build_model
from svi_jax.weights.export import params_hash

DEFAULT_SEED = 0
MAX_PIXELS = 2**28  # decoder refuses larger headers (memory safety on hostile files)


def _apply(model, params, method, *args):
    return model.apply({"params": params}, *args, method=method)


@functools.partial(jax.jit, static_argnames="model")
def _analyze(model: ProgressiveSIC, params, x, medians):
    """x (1, H, W, 3) -> (round(y), round(z − median)) as float32 integers."""
    y = _apply(model, params, ProgressiveSIC.analysis, x)
    z = _apply(model, params, ProgressiveSIC.hyper_analysis, y)
    return jnp.round(y)[0], jnp.round(z - medians)[0]


@functools.partial(jax.jit, static_argnames="model")
def _hyper(model: ProgressiveSIC, params, z_symbols, medians):
    """z symbols (int32) -> h_s(ẑ) with ẑ = symbol + median: the decoder's value."""
    z_hat = z_symbols.astype(jnp.float32) + medians
    return _apply(model, params, ProgressiveSIC.hyper_synthesis, z_hat[None])[0]


@functools.partial(jax.jit, static_argnames="model")
def _reconstruct(model: ProgressiveSIC, params, y_hat, hyper, level, uniform):
    """g_s of [ŷ first W·level channels | round(μ_h + U[−2, 2)) after] -> uint8 image."""
    c = model.latent_channels
    details = sample_details(hyper[..., c:], uniform)
    latent = compose_level_latent(y_hat, details, level, model.slice_width)
    x = _apply(model, params, ProgressiveSIC.synthesis, latent[None])[0]
    return jnp.round(x * 255.0).astype(jnp.uint8)


def detail_uniform(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """U[0, 1) for detail sampling from a uint64 seed (threefry; low and high 32 bits)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed & 0xFFFFFFFF), seed >> 32)
    return jax.random.uniform(key, shape)


class Codec:
    """A model ready to code: parameters on device, ẑ tables and hash computed once."""

    def __init__(
        self, params: dict, config: ml_collections.ConfigDict, model_hash: str | None = None
    ):
        self.config = config
        self.model = build_model(config.model)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.model_hash = bytes.fromhex(model_hash or params_hash(params, config))
        self.cparams = coding_params(self.params)
        self.pmf, self.offsets = z_tables(self.model, self.params)
        self.medians = jnp.asarray(z_medians(self.model, self.params))

    @property
    def num_slices(self) -> int:
        return self.model.num_slices

    # --- shapes ---------------------------------------------------------------------------
    def latent_shapes(self, height: int, width: int):
        ph = -(-height // DOWNSCALE_Z) * DOWNSCALE_Z
        pw = -(-width // DOWNSCALE_Z) * DOWNSCALE_Z
        y = (ph // DOWNSCALE_Y, pw // DOWNSCALE_Y, self.model.latent_channels)
        z = (ph // DOWNSCALE_Z, pw // DOWNSCALE_Z, self.model.hyper_channels)
        return y, z

    # --- encoder --------------------------------------------------------------------------
    def analyze(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) -> (y symbols (h, w, C), z symbols), int32."""
        image = to_rgb8(image)
        h, w = image.shape[:2]
        if h < 1 or w < 1 or h * w > MAX_PIXELS:
            raise ValueError(f"cannot code a {h}x{w} image")
        # zero-pads to a multiple of 64; row bands / tiles when the whole image is over budget
        y, z = banded.analyze(self.model, self.params, image, self.medians, whole=_analyze)
        y, z = np.asarray(y), np.asarray(z)
        limit = 2.0**31 - 1
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(z))):
            raise ValueError("the model produced non-finite latents for this image")
        if np.abs(y).max() > limit or np.abs(z).max() > limit:
            raise ValueError("latents exceed the int32 range of the coder")
        return y.astype(np.int32), z.astype(np.int32)

    def compress(
        self,
        image: np.ndarray,
        level: int | None = None,
        seed: int = DEFAULT_SEED,
        stats: dict | None = None,
        raster: bool = False,
    ) -> bytes:
        """uint8 (H, W, 3) image -> .sic bytes holding levels 1..level (default all).

        raster=True (benchmarks only) codes one position per step in raster order: such a
        file decodes only with `decompress(..., raster=True)`.
        """
        level = self.num_slices if level is None else int(level)
        if not 1 <= level <= self.num_slices:
            raise ValueError(f"level must be in 1..{self.num_slices}, got {level}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError("seed must be in 0..2**64-1")
        image = to_rgb8(image)
        t0 = time.perf_counter()
        y_sym, z_sym = self.analyze(image)
        _add(stats, "network_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        encoder = StreamEncoder()
        encoder.encode_factorized(z_sym, self.pmf, self.offsets)
        z_stream = encoder.finish()
        _add(stats, "entropy_s", time.perf_counter() - t0)
        hyper = self._hyper(z_sym, stats)
        y_buf = np.zeros(y_sym.shape, np.float32)
        streams = []
        for s in range(level):
            encoder = StreamEncoder()
            self._code_slice(y_buf, hyper, s, encoder, y_sym, raster=raster, stats=stats)
            t0 = time.perf_counter()
            streams.append(encoder.finish())
            _add(stats, "entropy_s", time.perf_counter() - t0)
        header = fmt.Header(
            self.model_hash, image.shape[0], image.shape[1], level, self.num_slices, int(seed)
        )
        return fmt.pack(header, z_stream, streams)

    # --- shared sequential path ----------------------------------------------------------
    def _hyper(self, z_sym: np.ndarray, stats: dict | None) -> jax.Array:
        t0 = time.perf_counter()
        hyper = _hyper(self.model, self.params, jnp.asarray(z_sym, jnp.int32), self.medians)
        hyper.block_until_ready()
        _add(stats, "network_s", time.perf_counter() - t0)
        return hyper

    def _code_slice(
        self,
        y_buf: np.ndarray,
        hyper: jax.Array,
        s: int,
        coder: StreamEncoder | StreamDecoder,
        y_sym: np.ndarray | None,
        raster: bool = False,
        stats: dict | None = None,
    ) -> None:
        """Encodes (y_sym given) or decodes slice s in place into y_buf (h, w, C) float32.

        The encoder replays the decoder exactly: same jitted calls, same buffer contents.
        """
        h, w, c = y_buf.shape
        width = c // self.num_slices
        s_arr = jnp.asarray(s, jnp.int32)
        t0 = time.perf_counter()
        earlier, hyper_s = slice_prologue(
            self.cparams, jnp.asarray(y_buf), hyper, s_arr, num_slices=self.num_slices
        )
        rows, cols = raster_schedule(h, w) if raster else wavefront_schedule(h, w)
        counts = np.ones(len(rows), np.int64) if raster else schedule_counts(h, w)
        slice_buf = np.zeros((h, w, width), np.float32)
        network = time.perf_counter() - t0
        entropy = 0.0
        bound = np.float32(SCALE_BOUND)
        for t in range(len(rows)):
            t0 = time.perf_counter()
            sigma, mu = wavefront_step(
                self.cparams,
                slice_buf,
                earlier,
                hyper_s,
                rows[t],
                cols[t],
                s_arr,
                num_slices=self.num_slices,
            )
            n = counts[t]
            r, q = rows[t, :n], cols[t, :n]
            sigma = np.maximum(np.asarray(sigma)[:n], bound)
            mu = np.asarray(mu)[:n]
            t1 = time.perf_counter()
            if y_sym is not None:
                symbols = y_sym[r, q, s * width : (s + 1) * width]
                coder.encode_gaussian(symbols, mu, sigma)
            else:
                try:
                    symbols = coder.decode_gaussian(mu, sigma)
                except EntropyCodingError as error:
                    raise fmt.BitstreamError(f"corrupt stream in slice {s + 1}: {error}") from None
            slice_buf[r, q] = symbols
            t2 = time.perf_counter()
            network += t1 - t0
            entropy += t2 - t1
        y_buf[..., s * width : (s + 1) * width] = slice_buf
        _add(stats, "network_s", network)
        _add(stats, "entropy_s", entropy)

    # --- decoder --------------------------------------------------------------------------
    def decode_symbols(
        self, data: bytes, level: int | None = None, raster: bool = False, stats: dict | None = None
    ) -> tuple[fmt.Bitstream, np.ndarray, np.ndarray, jax.Array, int]:
        """-> (bitstream, z symbols, ŷ buffer (slices ≥ level are 0), hyper, level)."""
        stream = fmt.parse(bytes(data))
        head = stream.header
        if head.model_hash != self.model_hash:
            raise fmt.BitstreamError(
                f"bitstream was written by another model (hash {head.model_hash.hex()[:12]}…), "
                f"this checkpoint is {self.model_hash.hex()[:12]}…"
            )
        if head.num_slices != self.num_slices:
            raise fmt.BitstreamError("bitstream slice count does not match the model")
        available = stream.available_levels
        if available == 0:
            raise fmt.BitstreamError("bitstream holds no slice: cut before slice 1")
        level = available if level is None else int(level)
        if not 1 <= level <= available:
            raise fmt.BitstreamError(f"level {level} not available: the file holds 1..{available}")
        if head.height * head.width > MAX_PIXELS:
            raise fmt.BitstreamError(f"implausible image size {head.height}x{head.width}")
        y_shape, z_shape = self.latent_shapes(head.height, head.width)
        banded.check_synthesis(self.model, head.height, head.width)  # fail before decoding
        t0 = time.perf_counter()
        try:
            decoder = StreamDecoder(stream.z_stream)
            z_sym = decoder.decode_factorized(self.pmf, self.offsets, z_shape)
            decoder.finish()
        except EntropyCodingError as error:
            raise fmt.BitstreamError(f"corrupt z stream: {error}") from None
        _add(stats, "entropy_s", time.perf_counter() - t0)
        hyper = self._hyper(z_sym, stats)
        y_buf = np.zeros(y_shape, np.float32)
        for s in range(level):
            decoder = _open(stream.slice_streams[s], s)
            self._code_slice(y_buf, hyper, s, decoder, None, raster=raster, stats=stats)
            try:
                decoder.finish()
            except EntropyCodingError as error:
                raise fmt.BitstreamError(f"corrupt stream in slice {s + 1}: {error}") from None
        return stream, z_sym, y_buf, hyper, level

    def decompress(
        self,
        data: bytes,
        level: int | None = None,
        seed: int | None = None,
        raster: bool = False,
        stats: dict | None = None,
    ) -> np.ndarray:
        """.sic bytes -> uint8 (H, W, 3) at `level` (default: every level in the file).

        Detail channels (≥ W·level) are sampled from `seed` (default: the header's seed).
        """
        stream, _, y_buf, hyper, level = self.decode_symbols(data, level, raster, stats)
        seed = stream.header.seed if seed is None else int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError("seed must be in 0..2**64-1")
        t0 = time.perf_counter()
        uniform = detail_uniform(seed, y_buf.shape)
        image = banded.reconstruct(
            self.model, self.params, y_buf, hyper, level, uniform, whole=_reconstruct
        )
        image = np.asarray(image)[: stream.header.height, : stream.header.width]
        _add(stats, "network_s", time.perf_counter() - t0)
        return image


def _open(data: bytes, s: int) -> StreamDecoder:
    try:
        return StreamDecoder(data)
    except EntropyCodingError as error:
        raise fmt.BitstreamError(f"corrupt stream in slice {s + 1}: {error}") from None


def _add(stats: dict | None, key: str, seconds: float) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0.0) + seconds


def _codec(params: dict | Codec, config: ml_collections.ConfigDict | None) -> Codec:
    if isinstance(params, Codec):
        return params
    if config is None:
        raise ValueError("config is required with raw params")
    return Codec(params, config)


def compress(
    params: dict | Codec,
    config: ml_collections.ConfigDict | None,
    image: np.ndarray,
    level: int | None = None,
    seed: int = DEFAULT_SEED,
) -> bytes:
    """Compresses a uint8 (H, W, 3) image into one progressive .sic bitstream.

    Pass a `Codec` as `params` (config None) to reuse its tables and compiled steps.
    """
    return _codec(params, config).compress(image, level=level, seed=seed)


def decompress(
    params: dict | Codec,
    config: ml_collections.ConfigDict | None,
    data: bytes,
    level: int | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Decodes `data` at `level` (default: all levels in the file) -> uint8 (H, W, 3)."""
    return _codec(params, config).decompress(data, level=level, seed=seed)


def truncate(data: bytes, level: int) -> bytes:
    """The level-`level` bitstream of `data` (a byte prefix plus a rewritten header)."""
    return fmt.truncate(bytes(data), level)


def info(data: bytes) -> dict:
    """Header fields, bytes per segment and bits per pixel per level (no model needed)."""
    stream = fmt.parse(bytes(data))
    head = stream.header
    sizes = stream.segment_sizes()
    pixels = head.height * head.width
    total = fmt.HEADER_SIZE + sizes[0]
    per_level = []
    for level, size in enumerate(sizes[1:], start=1):
        total += size
        per_level.append({"level": level, "bytes": total, "bpp": 8.0 * total / pixels})
    return {
        "format_version": head.version,
        "model_hash": head.model_hash.hex(),
        "height": head.height,
        "width": head.width,
        "coded_levels": head.num_levels,
        "available_levels": stream.available_levels,
        "num_slices": head.num_slices,
        "seed": head.seed,
        "header_bytes": fmt.HEADER_SIZE,
        "z_bytes": sizes[0],
        "slice_bytes": sizes[1:],
        "levels": per_level,
    }
