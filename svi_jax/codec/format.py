"""The .sic bitstream container: header, parsing, truncation (layout in docs/FORMAT.md).

All integers little-endian. Header (HEADER_SIZE = 99 bytes):
  magic b"SVIC" | format version u8 | model hash 32 B (sha256 of config.model + params) |
  entropy-model digest 8 B | height u32 | width u32 | coded levels u8 | slices of the model u8 |
  seed u64 | encoder 32 B (ASCII "svi-jax <version> <backend> jax <version>", NUL padded;
  diagnostics only) | CRC-32 of the preceding header bytes u32
then segments, each `length u32 | CRC-32 of the payload u32 | symbol check u16 | payload`:
first ẑ's stream, then one per latent slice in slice order. The symbol check is the low 16
bits of the CRC-32 of the segment's decoded symbols (int32 little-endian, row-major): a
payload whose CRC matches but whose symbols do not decoded with other parameters than it was
encoded with (a determinism failure, not a corrupt file). The first l slice segments are a
prefix of the file, so a file cut right after slice segment l decodes at level l; `truncate`
also rewrites the level count. A file cut inside slice segment k, or whose slice k fails its
checksum, still decodes and truncates at levels 1..k-1 (`Bitstream.damage`); asking it for
level k or more, or for its default level, raises `PartialFileError` naming the intact levels.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import struct
import zlib

import numpy as np

from svi_jax.integer_checks import as_integer, level_in_range  # noqa: F401 (as_integer: public here)

MAGIC = b"SVIC"
FORMAT_VERSION = 2
_HEADER = struct.Struct("<4sB32s8sIIBBQ32s")
HEADER_SIZE = _HEADER.size + 4
_SEGMENT = struct.Struct("<IIH")
SEGMENT_OVERHEAD = _SEGMENT.size
ENCODER_FIELD = 32


class BitstreamError(ValueError):
    """The data is not a readable .sic bitstream for this model and format version."""


class PartialFileError(BitstreamError):
    """A level was asked of a file whose slice segment `intact + 1` is cut or corrupt: only
    levels 1..`intact` can be decoded (`intact` may be 0)."""

    def __init__(self, message: str, intact: int):
        super().__init__(message)
        self.intact = intact


class DeterminismError(BitstreamError):
    """An intact file (checksums match) decodes to other symbols than were encoded: encoder
    and decoder computed different entropy parameters. A bug, never a corrupt input."""


def encoder_id(backend: str) -> str:
    """'svi-jax <version> <backend> jax <version>' of this process (diagnostics)."""
    try:
        ours = importlib.metadata.version("svi-jax")
    except importlib.metadata.PackageNotFoundError:
        ours = "unknown"
    try:
        jax_version = importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        jax_version = "unknown"
    return f"svi-jax {ours} {backend} jax {jax_version}"[:ENCODER_FIELD]


def symbol_check(symbols: np.ndarray) -> int:
    """Low 16 bits of the CRC-32 of int32 symbols in row-major order."""
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes()) & 0xFFFF


@dataclasses.dataclass(frozen=True)
class Header:
    model_hash: bytes  # 32-byte sha256 digest (svi_jax.weights.export.params_hash)
    entropy_digest: bytes  # 8 bytes: IntegerEntropyModel.digest[:8]
    height: int  # original image height (before padding to a multiple of 64)
    width: int
    num_levels: int  # slice segments the encoder wrote (1..num_slices)
    num_slices: int  # slices of the model (16 for every shipped config)
    seed: int  # detail-sampling seed (uint64)
    encoder: str = ""  # encoder_id() of the writer; diagnostics only, never compared
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        body = _HEADER.pack(
            MAGIC,
            self.version,
            self.model_hash,
            self.entropy_digest,
            self.height,
            self.width,
            self.num_levels,
            self.num_slices,
            self.seed,
            self.encoder.encode("ascii", "replace")[:ENCODER_FIELD],
        )
        return body + struct.pack("<I", zlib.crc32(body))


@dataclasses.dataclass(frozen=True)
class Segment:
    payload: bytes
    check: int  # symbol_check of the symbols the encoder coded into `payload`


@dataclasses.dataclass(frozen=True)
class Bitstream:
    header: Header
    z_segment: Segment
    slice_segments: tuple[Segment, ...]  # the intact slice segments present (a prefix)
    # "file cut inside slice k" / "checksum mismatch in slice k" when slice segment k is
    # damaged (k = available_levels + 1; what follows it is ignored); None for a whole prefix.
    damage: str | None = None

    @property
    def available_levels(self) -> int:
        return len(self.slice_segments)

    def damage_error(self) -> PartialFileError:
        """The error for a level this damaged file cannot give; names the intact levels."""
        n = self.available_levels
        intact = f"levels 1..{n} are intact" if n > 1 else "level 1 is intact"
        return PartialFileError(f"{self.damage}: {intact if n else 'no level is intact'}", n)

    def resolve_level(self, level: int | None) -> int:
        """`level`, or every intact level when None, checked against the segments present.

        Raises PartialFileError: the file is damaged and `level` is None or beyond the intact
        levels (the default never falls back silently to fewer levels). ValueError: `level`
        outside 1..num_slices. BitstreamError: `level` above the coded levels, or no slice.
        TypeError: `level` is not an integer (`svi_jax.integer_checks.level_in_range`)."""
        available = self.available_levels
        if level is None:
            if self.damage:
                raise self.damage_error()
            if available == 0:
                raise BitstreamError("bitstream holds no slice: cut before slice 1")
            return available
        # the range first, as compress checks it: a damaged file does not hide a bad level
        level = level_in_range(level, self.header.num_slices)
        if self.damage and level > available:
            raise self.damage_error()
        if level > available:
            raise BitstreamError(
                f"level {level} not available: the file holds levels 1..{available}"
            )
        return level

    def segment_sizes(self) -> list[int]:
        """Bytes of the z segment and each slice segment, framing included."""
        return [SEGMENT_OVERHEAD + len(s.payload) for s in (self.z_segment, *self.slice_segments)]


def _segment(segment: Segment) -> bytes:
    p = segment.payload
    return _SEGMENT.pack(len(p), zlib.crc32(p), segment.check) + p


def pack(header: Header, z_segment: Segment, slice_segments) -> bytes:
    if len(slice_segments) != header.num_levels:
        raise ValueError("one slice segment per coded level")
    return header.pack() + b"".join(_segment(s) for s in (z_segment, *slice_segments))


def parse_header(data: bytes) -> Header:
    if len(data) == 0:
        raise BitstreamError("empty file: not a .sic bitstream")
    if len(data) < 5 or data[:4] != MAGIC:
        raise BitstreamError("not a .sic bitstream (wrong magic bytes)")
    version = data[4]
    if version != FORMAT_VERSION:
        which = "a newer" if version > FORMAT_VERSION else "an older"
        raise BitstreamError(
            f"bitstream was written in format version {version} by {which} svi_jax; this "
            f"svi_jax reads version {FORMAT_VERSION}: decode it with the svi_jax that wrote it"
        )
    if len(data) < HEADER_SIZE:
        raise BitstreamError(f"truncated .sic header ({len(data)} of {HEADER_SIZE} bytes)")
    body = data[: _HEADER.size]
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    if zlib.crc32(body) != crc:
        raise BitstreamError("corrupt .sic header (checksum mismatch)")
    _, version, digest, entropy, h, w, levels, slices, seed, encoder = _HEADER.unpack(body)
    if not (1 <= levels <= slices) or h < 1 or w < 1:
        raise BitstreamError(f"invalid .sic header: {h}x{w}, {levels} of {slices} levels")
    name = encoder.rstrip(b"\0").decode("ascii", "replace")
    return Header(digest, entropy, h, w, levels, slices, seed, name, version)


def parse(data: bytes) -> Bitstream:
    """Splits a file into header and segments; raises BitstreamError with one clear line."""
    header = parse_header(data)
    pos = HEADER_SIZE
    segments: list[Segment] = []
    damage = None
    while pos < len(data):
        if len(segments) > header.num_levels:
            raise BitstreamError("trailing data after the last coded slice")
        what = "the z stream" if not segments else f"slice {len(segments)}"
        length = None
        if len(data) - pos >= SEGMENT_OVERHEAD:
            length, crc, check = _SEGMENT.unpack_from(data, pos)
        if length is None or len(data) - pos - SEGMENT_OVERHEAD < length:
            damage = f"file cut inside {what}"
        else:
            pos += SEGMENT_OVERHEAD
            payload = bytes(data[pos : pos + length])
            pos += length
            if zlib.crc32(payload) != crc:
                damage = f"corrupt bitstream: checksum mismatch in {what}"
        if damage:
            if not segments:  # nothing decodes without ẑ
                raise BitstreamError(f"{damage}: no level can be decoded")
            break  # slices 1..k-1 stay decodable; what follows slice k cannot be trusted
        segments.append(Segment(payload, check))
    if not segments:
        raise BitstreamError("truncated bitstream: no z stream after the header")
    return Bitstream(header, segments[0], tuple(segments[1:]), damage)


def truncate(data: bytes, level: int) -> bytes:
    """The bitstream of `level` (first `level` slices), without re-encoding; a damaged file
    (cut or corrupt in slice k) truncates to any level < k (`Bitstream.resolve_level`)."""
    stream = parse(data)
    level = stream.resolve_level(level)
    header = dataclasses.replace(stream.header, num_levels=level)
    return pack(header, stream.z_segment, stream.slice_segments[:level])
