"""Real progressive coding: compress / decompress / truncate / info (format: docs/FORMAT.md).

Float, on the default JAX device (jitted): g_a and h_a (encoder), g_s (decoder). Integer, on
the host (`integer_model`, `tables`, `range_coding`): everything that feeds the range coder —
ẑ's tables, h_s on the decoded ẑ symbols, the context model on decoded ŷ symbols, the
entropy-parameter network, (μ, σ) -> table rows and the Gaussian tables. Those are exact
integer computations, so a file decodes on any backend, thread count and JAX version. ẑ is
coded with its per-channel tables; each slice of ŷ = round(y) in wavefront order, one chunk per
wavefront step. The encoder computes every slice's parameters in one pass (integer sums do not
depend on grouping); the decoder steps through the wavefront.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from svi_jax.codec import banded, integer_model
from svi_jax.codec import format as fmt
from svi_jax.codec.inputs import as_bytes, rgb8
from svi_jax.codec.range_coding import EntropyCodingError, StreamDecoder, StreamEncoder
from svi_jax.codec.tables import FRAC_BITS, z_medians
from svi_jax.codec.wavefront import decode_slice, get_schedule
from svi_jax.data.image_io import MAX_PIXELS
from svi_jax.forward import compose_level_latent, sample_details
from svi_jax.integer_checks import level_in_range
from svi_jax.nn.model import DOWNSCALE_Y, DOWNSCALE_Z, ProgressiveSIC, build_model
from svi_jax.weights.export import check_params_fit, params_hash

DEFAULT_SEED = 0
# MAX_PIXELS (svi_jax.data.image_io, 2**28): the largest image read, coded, or decoded from a
# header (memory safety on hostile files).


def _apply(model, params, method, *args):
    return model.apply({"params": params}, *args, method=method)


@functools.partial(jax.jit, static_argnames="model")
def _analyze(model: ProgressiveSIC, params, x, medians):
    """x (1, H, W, 3) -> (round(y), round(z − median)) as float32 integers."""
    y = _apply(model, params, ProgressiveSIC.analysis, x)
    z = _apply(model, params, ProgressiveSIC.hyper_analysis, y)
    return jnp.round(y)[0], jnp.round(z - medians)[0]


@functools.partial(jax.jit, static_argnames="model")
def _hyper(model: ProgressiveSIC, params, z_sym, medians):
    """Float h_s(ẑ) on the default device, ẑ = z symbols + medians, (h, w, 2C): a diagnostic of
    what the float network computes there (run-to-run repeatability on a GPU). The coder never
    reads it: its (σ, μ) come from the integer entropy model on the host (integer_model.py)."""
    z_hat = jnp.asarray(z_sym, jnp.float32) + medians
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
    """A model ready to code: float parameters on device, the integer entropy model (derived
    once, ~1 s) and the model hash on the host.

    Raises ValueError when `params` do not fit `config.model` (paths and shapes against an
    abstract `init_params`, `svi_jax.weights.export.param_mismatches`; a change of attention
    heads is seen through the relative-position tables' shapes)."""

    def __init__(
        self, params: dict, config: ml_collections.ConfigDict, model_hash: str | None = None
    ):
        self.config = config
        self.model = build_model(config.model)
        check_params_fit(self.model, params)
        host = jax.tree_util.tree_map(np.asarray, params)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        model_hash = model_hash or params_hash(host, config)
        self.model_hash = bytes.fromhex(model_hash)
        self.entropy = integer_model.derive(host, self.model.num_slices, model_hash)
        self.medians = jnp.asarray(z_medians(host))
        self.encoder_id = fmt.encoder_id(jax.default_backend())

    @property
    def num_slices(self) -> int:
        return self.model.num_slices

    @property
    def entropy_digest(self) -> bytes:
        return self.entropy.digest[:8]

    # --- shapes ---------------------------------------------------------------------------
    def latent_shapes(self, height: int, width: int):
        ph = -(-height // DOWNSCALE_Z) * DOWNSCALE_Z
        pw = -(-width // DOWNSCALE_Z) * DOWNSCALE_Z
        y = (ph // DOWNSCALE_Y, pw // DOWNSCALE_Y, self.model.latent_channels)
        z = (ph // DOWNSCALE_Z, pw // DOWNSCALE_Z, self.model.hyper_channels)
        return y, z

    # --- encoder --------------------------------------------------------------------------
    def analyze(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (H, W, 3) -> (y symbols (h, w, C), z symbols), int32. Input rules and
        errors: `compress`."""
        image = rgb8(image)
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

        image: uint8 (H, W, 3) RGB, 0..255 (gray (H, W) is replicated, a 4th channel dropped:
          `to_rgb8`), or a PIL image. Another dtype is a TypeError: a float array has no one
          scale, and a range check cannot tell a dark 0..255 image from a [0, 1] one.
        level, seed: integers (numpy ones too); 3.7 is a TypeError, not level 3. Out of range
          (level not in 1..num_slices, seed not in 0..2**64-1): ValueError.
        raster=True (benchmarks only) codes one position per chunk in raster order: such a
        file decodes only with `decompress(..., raster=True)`.
        """
        level = self.num_slices if level is None else level_in_range(level, self.num_slices)
        seed = fmt.as_integer(seed, "seed")
        if not 0 <= seed < 2**64:
            raise ValueError("seed must be in 0..2**64-1")
        image = rgb8(image)
        t0 = time.perf_counter()
        y_sym, z_sym = self.analyze(image)
        t1 = time.perf_counter()
        _add(stats, "network_s", t1 - t0)
        encoder = StreamEncoder()
        encoder.encode_iid(z_sym, self.entropy.z_tables)
        z_segment = fmt.Segment(encoder.finish(), fmt.symbol_check(z_sym))
        t2 = time.perf_counter()
        _add(stats, "entropy_s", t2 - t1)
        hyper = self.entropy.hyper(z_sym)
        sigma, mu = self.entropy.gaussian_params(hyper, y_sym, level)
        rows, centres = self.entropy.gaussian.rows_and_centres(sigma, mu)
        _add(stats, "integer_model_s", time.perf_counter() - t2)
        t0 = time.perf_counter()
        steps, cols, counts = get_schedule(*y_sym.shape[:2], raster)
        width = self.entropy.width
        tables = self.entropy.gaussian.tables
        segments = []
        for s in range(level):
            part = slice(s * width, (s + 1) * width)
            sym, row, centre = y_sym[..., part], rows[..., part], centres[..., part]
            encoder = StreamEncoder()
            for t in range(len(steps)):
                r, q = steps[t, : counts[t]], cols[t, : counts[t]]
                encoder.encode_rows(sym[r, q], row[r, q], centre[r, q], tables)
            segments.append(fmt.Segment(encoder.finish(), fmt.symbol_check(sym)))
        _add(stats, "entropy_s", time.perf_counter() - t0)
        header = fmt.Header(
            self.model_hash,
            self.entropy_digest,
            image.shape[0],
            image.shape[1],
            level,
            self.num_slices,
            seed,
            self.encoder_id,
        )
        return fmt.pack(header, z_segment, segments)

    # --- decoder --------------------------------------------------------------------------
    def _desync(self, what: str, head: fmt.Header) -> fmt.DeterminismError:
        return fmt.DeterminismError(
            f"{what} is intact (its checksum matches) but does not decode to the symbols it "
            f"was encoded from: the encoder ({head.encoder or 'unknown'}) and this decoder "
            f"({self.encoder_id}) computed different coding parameters. This is a "
            "determinism failure of svi_jax, not a corrupt file; please report it"
        )

    def _check_header(self, stream: fmt.Bitstream, level: int | None) -> int:
        head = stream.header
        if head.model_hash != self.model_hash:
            raise fmt.BitstreamError(
                f"bitstream was written by another model (hash {head.model_hash.hex()[:12]}…), "
                f"this checkpoint is {self.model_hash.hex()[:12]}…"
            )
        if head.num_slices != self.num_slices:
            raise fmt.BitstreamError("bitstream slice count does not match the model")
        if head.entropy_digest != self.entropy_digest:
            raise fmt.DeterminismError(
                "this svi_jax derives another integer entropy model from the same parameters "
                f"(digest {self.entropy_digest.hex()}, file {head.entropy_digest.hex()}): "
                f"encoder {head.encoder or 'unknown'}, decoder {self.encoder_id}. This is a "
                "determinism failure of svi_jax, not a corrupt file; please report it"
            )
        level = stream.resolve_level(level)  # levels below a cut / corrupt slice still decode
        if head.height * head.width > MAX_PIXELS:
            raise fmt.BitstreamError(f"implausible image size {head.height}x{head.width}")
        return level

    def decode_symbols(
        self, data: bytes, level: int | None = None, raster: bool = False, stats: dict | None = None
    ) -> tuple[fmt.Bitstream, np.ndarray, np.ndarray, jax.Array, int]:
        """-> (bitstream, z symbols int32, ŷ buffer float32 (slices >= level are 0), hyper
        (h, w, 2C) float32 = the integer h_s output / 2**12, level).

        Raises BitstreamError (DeterminismError when intact data decodes wrongly), TypeError
        for data that is not bytes (`format.as_bytes`), ValueError for a level outside 1..S."""
        stream = fmt.parse(as_bytes(data, "decode_symbols"))
        level = self._check_header(stream, level)
        head = stream.header
        y_shape, z_shape = self.latent_shapes(head.height, head.width)
        banded.check_synthesis(self.model, head.height, head.width)  # fail before decoding
        t0 = time.perf_counter()
        try:
            decoder = StreamDecoder(stream.z_segment.payload)
            z_sym = decoder.decode_iid(self.entropy.z_tables, z_shape)
            decoder.finish()
        except EntropyCodingError:
            raise self._desync("the z stream", head) from None
        if fmt.symbol_check(z_sym) != stream.z_segment.check:
            raise self._desync("the z stream", head)
        t1 = time.perf_counter()
        _add(stats, "entropy_s", t1 - t0)
        hyper = self.entropy.hyper(z_sym)
        _add(stats, "integer_model_s", time.perf_counter() - t1)
        width, tables = self.entropy.width, self.entropy.gaussian.tables
        earlier = np.zeros((*y_shape[:2], 2 * y_shape[2]))
        y_sym = np.zeros(y_shape, np.int32)
        schedule = get_schedule(*y_shape[:2], raster)
        timer = {"entropy_s": 0.0}

        for s in range(level):
            segment = stream.slice_segments[s]
            t0 = time.perf_counter()
            try:
                decoder = StreamDecoder(segment.payload)

                def decode(sigma, mu, decoder=decoder):
                    t = time.perf_counter()
                    rows, centres = self.entropy.gaussian.rows_and_centres(sigma, mu)
                    out = decoder.decode_rows(rows, centres, tables)
                    timer["entropy_s"] += time.perf_counter() - t
                    return out

                part = slice(2 * width * s, 2 * width * (s + 1))
                hyper_s = self.entropy.hyper_slice(hyper, s)
                sym = decode_slice(self.entropy, earlier[..., part], hyper_s, s, decode, schedule)
                decoder.finish()
            except EntropyCodingError:
                raise self._desync(f"slice {s + 1}", head) from None
            if fmt.symbol_check(sym) != segment.check:
                raise self._desync(f"slice {s + 1}", head)
            y_sym[..., s * width : (s + 1) * width] = sym
            if s + 1 < level:
                later = self.entropy.context_from_slice(sym, s, s + 1)
                earlier[..., 2 * width * (s + 1) :] += later
            _add(stats, "integer_model_s", time.perf_counter() - t0)
        _add(stats, "entropy_s", timer["entropy_s"])
        _add(stats, "integer_model_s", -timer["entropy_s"])
        hyper_f = jnp.asarray(np.ldexp(hyper.astype(np.float32), -FRAC_BITS))
        return stream, z_sym, y_sym.astype(np.float32), hyper_f, level

    def decompress(
        self,
        data: bytes,
        level: int | None = None,
        seed: int | None = None,
        raster: bool = False,
        stats: dict | None = None,
    ) -> np.ndarray:
        """.sic bytes -> uint8 (H, W, 3) at `level` (default: every level in the file).

        Detail channels (>= W·level) are sampled from `seed` (default: the header's seed).
        level, seed: integers (a float is a TypeError, as in `compress`).
        """
        data = as_bytes(data, "decompress")  # a path: TypeError naming decompress
        stream, _, y_buf, hyper, level = self.decode_symbols(data, level, raster, stats)
        seed = stream.header.seed if seed is None else fmt.as_integer(seed, "seed")
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
    Input rules and errors (uint8 only, integer level and seed): `Codec.compress`.
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
    """The level-`level` bitstream of `data` (a byte prefix plus a rewritten header).

    Raises TypeError for a non-integer level or data that is not bytes (a path: read the
    file first), ValueError for a level outside 1..num_slices, BitstreamError for one the
    file lacks."""
    return fmt.truncate(as_bytes(data, "truncate"), level)


def info(data: bytes) -> dict:
    """Header fields, bytes per segment and bits per pixel per level (no model needed).

    A file cut or corrupt inside slice k reports levels 1..k-1 (`available_levels`) and what
    is wrong (`damage`, else None). Raises BitstreamError for a bad header or z stream,
    TypeError for data that is not bytes (a path: read the file first)."""
    stream = fmt.parse(as_bytes(data, "info"))
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
        "entropy_digest": head.entropy_digest.hex(),
        "encoder": head.encoder,
        "height": head.height,
        "width": head.width,
        "coded_levels": head.num_levels,
        "available_levels": stream.available_levels,
        "damage": stream.damage,  # None, or what is wrong with slice available_levels + 1
        "num_slices": head.num_slices,
        "seed": head.seed,
        "header_bytes": fmt.HEADER_SIZE,
        "z_bytes": sizes[0],
        "slice_bytes": sizes[1:],
        "levels": per_level,
    }
