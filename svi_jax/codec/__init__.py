"""The real progressive codec: one .sic bitstream per image, decodable at any level.

    data = compress(params, config, image)          # uint8 (H, W, 3) -> bytes, 16 levels
    x4 = decompress(params, config, data, level=4)  # any level <= the coded ones
    small = truncate(data, 4)                        # level-4 file, no re-encoding
    info(data)                                       # sizes and bpp per level

`Codec(params, config)` keeps the integer entropy model (derived once) and the compiled
g_a/g_s for many images. Files decode on any backend, thread count and supported JAX version
(the entropy path is integer arithmetic). Format and guarantees: docs/FORMAT.md.
CLI: `svi-codec` / `python -m svi_jax.codec`.
"""

from svi_jax.codec.api import Codec, compress, decompress, detail_uniform, info, truncate
from svi_jax.codec.format import FORMAT_VERSION, BitstreamError, DeterminismError

__all__ = [
    "FORMAT_VERSION",
    "BitstreamError",
    "Codec",
    "DeterminismError",
    "compress",
    "decompress",
    "detail_uniform",
    "info",
    "truncate",
]
