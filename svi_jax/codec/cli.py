"""svi-codec: compress / decompress / truncate / info for .sic files.

    svi-codec compress photo.jpg photo.sic --checkpoint runs/tiny [--level L] [--seed S]
    svi-codec decompress photo.sic out.png --checkpoint runs/tiny [--level l] [--seed s]
    svi-codec truncate photo.sic photo_l4.sic --level 4     (--in-place: photo.sic itself)
    svi-codec info photo.sic [--json]

Inputs: any image Pillow reads (PNG, JPEG, WebP, ...); the EXIF orientation is applied as
image viewers do (a phone photo tagged "rotate 90" is coded upright); grayscale is replicated
to RGB, alpha is dropped, 16-bit data is scaled to 8 bits (svi_jax.data.image_io). Of a
multi-frame file (GIF, animated WebP/PNG, multi-page TIFF) the first frame is coded, with one
`svi-codec: note:` line saying so. Images above 2**28 pixels are refused in one line.
decompress writes the format its output's extension names (.png, .jpg/.jpeg at quality 95,
.webp lossless, .bmp, .tif/.tiff, .ppm); any other extension is refused before decoding.
--checkpoint takes an export directory, a train.py workdir (holding export/), or a directory
inside the workdir such as workdir/checkpoints[/step] (the workdir's export/ is used).
An output that is one of the command's inputs (the same file through a symlink, `./x` or a
hard link too) is refused; truncate rewrites its input only with --in-place. .sic outputs
must end in .sic. An output folder that is missing or cannot take a new file is refused
before any decoding (folders are never created). Outputs are written atomically (temporary
file + rename, `svi_jax.safety.write_atomic`) with the mode a plain write gives: 0666 & ~umask
for a new file, the old file's mode for a replaced one (truncate --in-place). An output that
is a symlink writes its target (kept a link, as a plain write through it does; a dangling link
creates its target when the target's folder exists). A rename gives the written name a new
file: other hard links to the old one keep the old content (truncate --in-place of a
hard-linked .sic cuts that name only). On any error
(out of memory included) the command prints one line naming the file it is about, exits with
status 1 and leaves no output file; Ctrl-C prints "svi-codec: interrupted" and exits 130.
A .sic cut (or corrupt) inside slice k decodes, truncates and reports levels 1..k-1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys

from svi_jax import safety
from svi_jax.codec import api
from svi_jax.codec import format as fmt
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
from svi_jax.integer_checks import level_in_range
from svi_jax.weights.export import ExportError, load_exported_model

DEFAULT_CHECKPOINT = "runs/tiny"


class CliError(Exception):
    """A user-facing error: printed as one line."""


def _load_codec(path: str) -> api.Codec:
    p = pathlib.Path(path)
    if not p.exists():
        # A relative --checkpoint (the default runs/tiny too) is looked up in the current
        # directory, as train.py's --workdir is written there: say where it was looked for.
        where = "" if p.is_absolute() else " (looked up relative to the current directory)"
        raise CliError(
            f"checkpoint not found: {p.absolute()}{where}; give --checkpoint an export folder "
            "or a train.py workdir (`python train.py` makes runs/tiny in the current directory)"
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


@contextlib.contextmanager
def _about(path: str):
    """Bitstream errors name the file they are about: `x.sic: not a .sic bitstream ...`; a
    damaged file also says which --level still decodes."""
    try:
        yield
    except BitstreamError as error:
        hint = ""
        if isinstance(error, fmt.PartialFileError) and error.intact:
            hint = f" (use --level {error.intact})"
        raise CliError(f"{path}: {_one_line(error)}{hint}") from None


def _check_level(level: int | None, num_slices: int) -> None:
    if level is not None:
        try:
            level_in_range(level, num_slices, "--level")  # the API's rule and words
        except ValueError as error:
            raise CliError(str(error)) from None


def _check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**64:
        raise CliError(f"--seed must be in 0..2**64-1, got {seed}")


def _size(height: int, width: int) -> str:
    return f"{width}x{height} px (W x H)"


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


def _refuse_non_sic_name(out: str) -> None:
    """.sic data goes to a .sic name: an image's name (photo.png) or none would lie about it."""
    target = safety.output_target(out)  # a symlink's target is what gets written
    for name in dict.fromkeys((pathlib.Path(out), target)):
        suffix = name.suffix.lower()
        shown = out if name == pathlib.Path(out) else f"{out} -> {name}"
        if suffix in {*OUTPUT_FORMATS, *IMAGE_EXTENSIONS}:
            raise CliError(
                f"output {shown} is named like an image but gets .sic data: name it .sic"
            )
        if suffix != ".sic":
            raise CliError(f"{shown}: output must end in .sic (it gets .sic data)")


def _compress(args) -> None:
    _check_seed(args.seed)
    safety.refuse_overwrite([args.image, *_export_files(args.checkpoint)], [args.out])
    _refuse_non_sic_name(args.out)
    safety.check_output_folder(args.out)
    notes: list[str] = []
    image = load_image(args.image, notes)
    for note in notes:  # e.g. a GIF: only its first frame is coded
        print(f"svi-codec: note: {note}", file=sys.stderr)
    codec = _load_codec(args.checkpoint)
    _check_level(args.level, codec.num_slices)
    try:
        data = codec.compress(image, level=args.level, seed=args.seed)
    except ValueError as error:  # e.g. latents out of the coder's range: name the image
        raise CliError(f"{args.image}: {_one_line(error)}") from None
    safety.write_atomic(args.out, data)
    h, w = image.shape[:2]
    print(f"{args.out}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp, {_size(h, w)}")


def _decompress(args) -> None:
    safety.refuse_overwrite([args.input, *_export_files(args.checkpoint)], [args.out])
    output_format(args.out)  # an unknown extension is refused before any decoding
    _check_seed(args.seed)
    safety.check_output_folder(args.out)
    data = _read(args.input)
    with _about(args.input):
        head = fmt.parse_header(data)
    codec = _load_codec(args.checkpoint)
    _check_level(args.level, codec.num_slices)
    if head.model_hash != codec.model_hash:
        raise CliError(
            f"{args.input}: written by another model (hash {head.model_hash.hex()[:12]}…) than "
            f"--checkpoint {args.checkpoint} (hash {codec.model_hash.hex()[:12]}…): decode it "
            "with the checkpoint that compressed it"
        )
    with _about(args.input):
        level = fmt.parse(data).resolve_level(args.level)  # the level written, for the message
        image = codec.decompress(data, level=level, seed=args.seed)
    save_image(args.out, image)
    print(f"{args.out}: level {level}, {_size(*image.shape[:2])}")


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
    _refuse_non_sic_name(args.out)
    safety.check_output_folder(args.out)
    data = _read(args.input)
    with _about(args.input):
        _check_level(args.level, fmt.parse_header(data).num_slices)
        data = api.truncate(data, args.level)
    safety.write_atomic(args.out, data)  # --in-place: keeps the file's mode
    print(f"{args.out}: level {args.level}, {len(data)} bytes")


def _info(args) -> None:
    with _about(args.input):
        summary = api.info(_read(args.input))
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    s = summary
    print(
        f"format {s['format_version']}, model {s['model_hash'][:16]}, "
        f"{_size(s['height'], s['width'])}, levels {s['available_levels']}/{s['coded_levels']} "
        f"present, seed {s['seed']}"
    )
    if s["damage"]:
        n = s["available_levels"]
        print(f"damaged: {s['damage']}: " + (f"levels 1..{n} are intact" if n else "no level"))
    print(f"encoder {s['encoder'] or 'unknown'}, entropy model {s['entropy_digest']}")
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
    d.add_argument(
        "--level",
        type=int,
        default=None,
        help="level of the one image written (default: the highest level the file holds)",
    )
    d.add_argument("--seed", type=int, default=None, help="default: the header's seed")
    d.set_defaults(run=_decompress)
    t = sub.add_parser("truncate", help="cut a .sic to its first --level levels")
    t.add_argument("input")
    t.add_argument("out", nargs="?")
    t.add_argument("--level", type=int, required=True)
    t.add_argument(
        "--in-place",
        action="store_true",
        help="rewrite INPUT itself, atomically (a symlink: its target; a hard-linked file: "
        "this name only, other links keep the old file)",
    )
    t.set_defaults(run=_truncate)
    i = sub.add_parser("info", help="levels, sizes per slice, bpp per level")
    i.add_argument("input")
    i.add_argument("--json", action="store_true")
    i.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        enable_persistent_cache()  # the next image loads the compiled analysis / reconstruction
        args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: write_atomic has removed its temporary file
        print("svi-codec: interrupted", file=sys.stderr)
        return 130
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
        safety.OutputPathError,
    ) as error:
        print(f"svi-codec: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. a full disk: "out.png: No space left on device"
        what = f"{error.filename}: " if error.filename else ""
        print(f"svi-codec: error: {what}{error.strerror or _one_line(error)}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"svi-codec: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:  # XLA's JaxRuntimeError is a RuntimeError
        about = getattr(args, "image", None) or getattr(args, "input", "")
        line = safety.runtime_failure(error, f"running {args.command} {about}".rstrip())
        if line is None:
            raise
        print(f"svi-codec: error: {line}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return safety.one_line(error, limit=1000)


if __name__ == "__main__":
    sys.exit(main())
