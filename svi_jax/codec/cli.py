"""svi-codec: compress / decompress / truncate / info for .sic files.

    svi-codec compress photo.jpg photo.sic --checkpoint runs/tiny [--level L] [--seed S]
    svi-codec decompress photo.sic out.png --checkpoint runs/tiny [--level l] [--seed s]
    svi-codec truncate photo.sic photo_l4.sic --level 4     (--in-place: photo.sic itself)
    svi-codec info photo.sic [--json]

Inputs: any image Pillow reads (PNG, JPEG, WebP, ...); the EXIF orientation is applied as
image viewers do (a phone photo tagged "rotate 90" is coded upright); grayscale is replicated
to RGB, alpha is dropped, 16-bit data is scaled to 8 bits (svi_jax.data.image_io).
decompress writes the format its output's extension names (.png, .jpg/.jpeg at quality 95,
.webp lossless, .bmp, .tif/.tiff, .ppm); any other extension is refused before decoding.
--checkpoint takes an export directory, a train.py workdir (holding export/), or a directory
inside the workdir such as workdir/checkpoints[/step] (the workdir's export/ is used).
An output that is one of the command's inputs (the same file through a symlink, `./x` or a
hard link too) is refused; truncate rewrites its input only with --in-place. Outputs are
written atomically (temporary file + rename); on any error (out of memory included) the
command prints one line, exits with status 1 and leaves no output file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

from svi_jax import safety
from svi_jax.codec import api
from svi_jax.codec.format import BitstreamError
from svi_jax.codec.range_coding import EntropyCodingError
from svi_jax.compilation import enable_persistent_cache
from svi_jax.data.image_io import (
    IMAGE_EXTENSIONS,
    OUTPUT_FORMATS,
    DataError,
    load_image,
    output_format,
    save_image,
)
from svi_jax.weights.export import ExportError, load_exported_model

DEFAULT_CHECKPOINT = "runs/tiny"


class CliError(Exception):
    """A user-facing error: printed as one line."""


def _load_codec(path: str) -> api.Codec:
    p = pathlib.Path(path)
    if not p.exists():
        raise CliError(
            f"checkpoint not found: {p} (give --checkpoint an export folder or a train.py "
            "workdir; `python train.py` makes runs/tiny)"
        )
    candidates = [p, *list(p.resolve().parents)[:2]]
    error: Exception | None = None
    for candidate in candidates:
        try:
            config, params, digest = load_exported_model(candidate)
            return api.Codec(params, config, model_hash=digest)
        except ExportError as e:
            error = error or e
    raise CliError(str(error))


def _write_atomic(path: str, data: bytes) -> None:
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: str) -> bytes:
    p = pathlib.Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "not found"
        raise CliError(f"input file {p} {what}: give the path of a .sic file")
    return p.read_bytes()


def _export_files(checkpoint: str) -> list[pathlib.Path]:
    """Files of the checkpoint folder and its export/ (inputs an output must not replace)."""
    p = pathlib.Path(checkpoint)
    if p.is_file():
        return [p]
    return [f for d in (p, p / "export") if d.is_dir() for f in d.iterdir() if f.is_file()]


def _refuse_image_name(out: str) -> None:
    """A .sic written under an image's name (photo.png) would be a file its name lies about."""
    if pathlib.Path(out).suffix.lower() in {*OUTPUT_FORMATS, *IMAGE_EXTENSIONS}:
        raise CliError(f"output {out} is named like an image but gets .sic data: name it .sic")


def _compress(args) -> None:
    safety.refuse_overwrite([args.image, *_export_files(args.checkpoint)], [args.out])
    _refuse_image_name(args.out)
    image = load_image(args.image)
    codec = _load_codec(args.checkpoint)
    data = codec.compress(image, level=args.level, seed=args.seed)
    _write_atomic(args.out, data)
    h, w = image.shape[:2]
    print(f"{args.out}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp, {h}x{w}")


def _decompress(args) -> None:
    safety.refuse_overwrite([args.input, *_export_files(args.checkpoint)], [args.out])
    output_format(args.out)  # an unknown extension is refused before any decoding
    data = _read(args.input)
    codec = _load_codec(args.checkpoint)
    image = codec.decompress(data, level=args.level, seed=args.seed)
    save_image(args.out, image)
    print(f"{args.out}: {image.shape[0]}x{image.shape[1]}")


def _truncate(args) -> None:
    if args.in_place:
        if args.out is not None and not safety.same_file(args.out, args.input):
            raise CliError(f"--in-place rewrites {args.input}: give no output path")
        args.out = args.input
    elif args.out is None:
        raise CliError(f"truncate {args.input} needs an output path (or --in-place)")
    else:
        try:
            safety.refuse_overwrite([args.input], [args.out])
        except safety.OverwriteError as error:
            raise CliError(f"{error} (or pass --in-place to cut {args.input} itself)") from None
    _refuse_image_name(args.out)
    data = api.truncate(_read(args.input), args.level)
    _write_atomic(args.out, data)
    print(f"{args.out}: level {args.level}, {len(data)} bytes")


def _info(args) -> None:
    summary = api.info(_read(args.input))
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    s = summary
    print(
        f"format {s['format_version']}, model {s['model_hash'][:16]}, {s['height']}x{s['width']}, "
        f"levels {s['available_levels']}/{s['coded_levels']} present, seed {s['seed']}"
    )
    print(f"header {s['header_bytes']} B, z {s['z_bytes']} B")
    for row, size in zip(s["levels"], s["slice_bytes"], strict=True):
        print(
            f"level {row['level']:2d}: slice {size:7d} B, total {row['bytes']:8d} B, "
            f"{row['bpp']:.4f} bpp"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svi-codec", description="Progressive synonymous image codec (.sic files)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "compress",
        help="image -> .sic (all levels, or the first --level); EXIF orientation is applied",
        description="Compress an image. The EXIF orientation tag is applied as image viewers "
        "do, so the .sic decodes to the picture people see.",
    )
    c.add_argument("image")
    c.add_argument("out")
    c.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    c.add_argument("--level", type=int, default=None, help="levels to code (default: all)")
    c.add_argument("--seed", type=int, default=api.DEFAULT_SEED, help="detail seed in header")
    c.set_defaults(run=_compress)
    d = sub.add_parser(
        "decompress",
        help=".sic -> image at a level, in the format of OUT's extension",
        description="Decode a .sic. OUT's extension picks the format: "
        + ", ".join(OUTPUT_FORMATS)
        + " (.jpg at quality 95, .webp lossless); other extensions are refused.",
    )
    d.add_argument("input")
    d.add_argument("out")
    d.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    d.add_argument("--level", type=int, default=None, help="default: every level in the file")
    d.add_argument("--seed", type=int, default=None, help="default: the header's seed")
    d.set_defaults(run=_decompress)
    t = sub.add_parser("truncate", help="cut a .sic to its first --level levels")
    t.add_argument("input")
    t.add_argument("out", nargs="?")
    t.add_argument("--level", type=int, required=True)
    t.add_argument("--in-place", action="store_true", help="rewrite INPUT itself (atomically)")
    t.set_defaults(run=_truncate)
    i = sub.add_parser("info", help="levels, sizes per slice, bpp per level")
    i.add_argument("input")
    i.add_argument("--json", action="store_true")
    i.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_persistent_cache()  # the next image loads the compiled analysis / reconstruction
    try:
        args.run(args)
    except BrokenPipeError:  # e.g. `svi-codec info f.sic | head`: the reader left, not an error
        # Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (
        CliError,
        DataError,
        BitstreamError,
        EntropyCodingError,
        ExportError,
        safety.OverwriteError,
    ) as error:
        print(f"svi-codec: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"svi-codec: error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:  # XLA's JaxRuntimeError is a RuntimeError
        line = safety.runtime_failure(error, f"running {args.command}")
        if line is None:
            raise
        print(f"svi-codec: error: {line}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return safety.one_line(error, limit=1000)


if __name__ == "__main__":
    sys.exit(main())
