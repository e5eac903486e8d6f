"""The .sic bitstream container: header, parsing, truncation (layout in docs/FORMAT.md).

All integers little-endian. Header (HEADER_SIZE bytes):
  magic b"SVIC" | format version u8 | model hash 32 B (sha256 of config.model + params) |
  height u32 | width u32 | coded levels u8 | slices of the model u8 | seed u64 |
  CRC-32 of the preceding header bytes u32
then segments, each `length u32 | CRC-32 u32 | payload`: first ẑ's stream, then one per
latent slice in slice order. The first l slice segments are a prefix of the file, so a file
cut right after slice segment l decodes at level l; `truncate` also rewrites the level count.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

MAGIC = b"SVIC"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sB32sIIBBQ")
HEADER_SIZE = _HEADER.size + 4
_SEGMENT = struct.Struct("<II")
SEGMENT_OVERHEAD = _SEGMENT.size


class BitstreamError(ValueError):
    """The data is not a readable .sic bitstream for this model and format version."""


@dataclasses.dataclass(frozen=True)
class Header:
    model_hash: bytes  # 32-byte sha256 digest (svi_jax.weights.export.params_hash)
    height: int  # original image height (before padding to a multiple of 64)
    width: int
    num_levels: int  # slice segments the encoder wrote (1..num_slices)
    num_slices: int  # slices of the model (16 for every shipped config)
    seed: int  # detail-sampling seed (uint64)
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        body = _HEADER.pack(
            MAGIC,
            self.version,
            self.model_hash,
            self.height,
            self.width,
            self.num_levels,
            self.num_slices,
            self.seed,
        )
        return body + struct.pack("<I", zlib.crc32(body))


@dataclasses.dataclass(frozen=True)
class Bitstream:
    header: Header
    z_stream: bytes
    slice_streams: tuple[bytes, ...]  # the complete slice segments present (a prefix)

    @property
    def available_levels(self) -> int:
        return len(self.slice_streams)

    def segment_sizes(self) -> list[int]:
        """Bytes of the z segment and each slice segment, framing included."""
        return [SEGMENT_OVERHEAD + len(s) for s in (self.z_stream, *self.slice_streams)]


def _segment(payload: bytes) -> bytes:
    return _SEGMENT.pack(len(payload), zlib.crc32(payload)) + payload


def pack(header: Header, z_stream: bytes, slice_streams: list[bytes] | tuple[bytes, ...]) -> bytes:
    if len(slice_streams) != header.num_levels:
        raise ValueError("one slice stream per coded level")
    return header.pack() + b"".join(_segment(s) for s in (z_stream, *slice_streams))


def parse_header(data: bytes) -> Header:
    if len(data) == 0:
        raise BitstreamError("empty file: not a .sic bitstream")
    if len(data) < 5 or data[:4] != MAGIC:
        raise BitstreamError("not a .sic bitstream (wrong magic bytes)")
    version = data[4]
    if version != FORMAT_VERSION:
        newer = "newer than" if version > FORMAT_VERSION else "not supported by"
        raise BitstreamError(
            f"bitstream format version {version} is {newer} this svi_jax "
            f"(reads version {FORMAT_VERSION}); decode it with the svi_jax that wrote it"
        )
    if len(data) < HEADER_SIZE:
        raise BitstreamError(f"truncated .sic header ({len(data)} of {HEADER_SIZE} bytes)")
    body = data[: _HEADER.size]
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    if zlib.crc32(body) != crc:
        raise BitstreamError("corrupt .sic header (checksum mismatch)")
    _, version, digest, h, w, levels, slices, seed = _HEADER.unpack(body)
    if not (1 <= levels <= slices) or h < 1 or w < 1:
        raise BitstreamError(f"invalid .sic header: {h}x{w}, {levels} of {slices} levels")
    return Header(digest, h, w, levels, slices, seed, version)


def parse(data: bytes) -> Bitstream:
    """Splits a file into header and segments; raises BitstreamError with one clear line."""
    header = parse_header(data)
    pos = HEADER_SIZE
    segments: list[bytes] = []
    while pos < len(data):
        if len(segments) > header.num_levels:
            raise BitstreamError("trailing data after the last coded slice")
        what = "the z stream" if not segments else f"slice {len(segments)}"
        if len(data) - pos < SEGMENT_OVERHEAD:
            raise BitstreamError(f"file cut inside {what} (truncated bitstream)")
        length, crc = _SEGMENT.unpack_from(data, pos)
        pos += SEGMENT_OVERHEAD
        if len(data) - pos < length:
            raise BitstreamError(f"file cut inside {what} (truncated bitstream)")
        payload = bytes(data[pos : pos + length])
        pos += length
        if zlib.crc32(payload) != crc:
            raise BitstreamError(f"corrupt bitstream: checksum mismatch in {what}")
        segments.append(payload)
    if not segments:
        raise BitstreamError("truncated bitstream: no z stream after the header")
    return Bitstream(header, segments[0], tuple(segments[1:]))


def truncate(data: bytes, level: int) -> bytes:
    """The bitstream of `level` (first `level` slices), without re-encoding."""
    stream = parse(data)
    if not 1 <= level <= stream.available_levels:
        raise BitstreamError(
            f"level {level} not available: the file holds levels 1..{stream.available_levels}"
        )
    header = dataclasses.replace(stream.header, num_levels=level)
    return pack(header, stream.z_stream, stream.slice_streams[:level])
