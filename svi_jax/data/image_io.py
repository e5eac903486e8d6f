"""Reading image files into 8-bit RGB arrays, with errors that name the file.

Every image that enters training or evaluation goes through `to_rgb8`, so the codec only
ever sees `uint8` arrays of shape (H, W, 3):

* grayscale (L, 1-bit) is replicated to three channels;
* palette images (P, PA) are expanded through their palette;
* alpha channels (RGBA, LA, PA) are dropped, keeping the stored colour (no compositing);
* 16-bit images (Pillow modes I;16* and I, uint16 arrays) are rounded to 8 bits
  (value / 257); floating point images are read as [0, 1] data; other integer arrays must
  already hold 0..255;
* CMYK, YCbCr, LAB and HSV images are converted by Pillow;
* multi-frame files (animated GIF, WebP or PNG, multi-page TIFF) contribute their first
  frame only; `load_image(path, notes=[...])` says so in one line;
* images above `MAX_PIXELS` (H x W = 2**28, 268 MP) are refused in one line before decoding.
  Pillow's own decompression-bomb limit (89 MP: a two-line warning, an error above 179 MP)
  is raised to ours when this module is imported, so it never speaks first;
* EXIF orientation is applied as image viewers apply it (`PIL.ImageOps.exif_transpose`):
  a phone photo stored landscape with Orientation=6 is read as the portrait image people see.
  Codec, training and evaluation all read through `load_image`, so they agree.

Files are accepted by extension (`IMAGE_EXTENSIONS`, case-insensitive): every still-image
format the codec writes (`OUTPUT_FORMATS`: PNG, JPEG, WebP, BMP, TIFF, PPM) under every name
Pillow registers for it, plus GIF (first frame) and the rest of the PNM family. This one list
serves the training loader, eval.py and svi-codec. Files whose extension names another image
format (`OTHER_IMAGE_EXTENSIONS`: .heic, .avif, .ico, ...) are skipped; `list_images(path,
skipped=[...])` collects them and `svi_jax.data.checks.skipped_images_line` says so in one
line. Images are written (`save_image`) in the format their file name says (`OUTPUT_FORMATS`),
atomically.

Built-in data: `SKIMAGE_PHOTOS`, colour photos bundled with scikit-image (no download);
`write_skimage_split(root)` writes them as PNGs into root/train and root/val so they go
through the same folder loader as any dataset.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from svi_jax import safety

# Extensions that `list_images` picks up (compared lower-case): the formats of OUTPUT_FORMATS
# (so a decoded .bmp/.tif/.ppm can go back into training, eval or svi-codec) under each name
# Pillow registers for them, GIF (its first frame: load_image) and the whole PNM family.
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".apng",
    ".webp",
    ".gif",
    ".bmp",
    ".dib",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".pbm",
    ".pnm",
)
# Other image formats (Pillow's registered still-image extensions and common camera / modern
# ones Pillow may lack): not read, but named in one line when a folder holds them, so photos
# are never dropped silently.
OTHER_IMAGE_EXTENSIONS = frozenset(
    ".avif .avifs .heic .heif .jxl .jp2 .j2k .jpx .jpf .jpc .j2c .ico .cur .icns .tga .psd .qoi "
    ".dds .exr .hdr .pfm .svg .mpo .pcx .sgi .rgb .rgba .bw .ras .xbm .xpm .blp .msp .im "
    ".dng .cr2 .cr3 .nef .arw .orf .rw2 .raf .raw".split()
)

PathLike = str | os.PathLike

# The largest image (H x W pixels) svi_jax reads or codes (the codec refuses larger headers
# too: memory safety on hostile files). 2**28 = 268 MP, e.g. 16384 x 16384.
MAX_PIXELS = 2**28
# Pillow warns above its MAX_IMAGE_PIXELS (default 89.5 MP, with a two-line warning naming
# its source file) and refuses above twice that: images our limit accepts. Raised (never
# lowered) to ours, process-wide: Pillow has no per-call limit.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# warnings.catch_warnings changes process-wide state: one opener at a time (headers only).
_OPEN_LOCK = threading.Lock()

# Output extension -> (Pillow format, save options). Lossless where the format allows it, so
# a decoded image is written as decoded; JPEG (lossy by nature) at quality 95, no subsampling.
OUTPUT_FORMATS: dict[str, tuple[str, dict]] = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".jpeg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".webp": ("WEBP", {"lossless": True}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
    ".ppm": ("PPM", {}),
}


class DataError(ValueError):
    """A dataset path, file or image that cannot be used; the message names it."""


class MissingImageError(DataError, FileNotFoundError):
    """An image path that does not exist (also a `FileNotFoundError`)."""


def extensions_text() -> str:
    """The accepted extensions, for messages: ".png, .jpg, ... (case-insensitive)"."""
    return ", ".join(IMAGE_EXTENSIONS) + " (case-insensitive)"


def is_image_path(path: PathLike) -> bool:
    """True when the file name has one of `IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def looks_like_other_image(path: PathLike) -> bool:
    """True when the extension names an image format svi_jax does not read (.heic, .ico, ...)."""
    return os.path.splitext(os.fspath(path))[1].lower() in OTHER_IMAGE_EXTENSIONS


def list_images(path: PathLike, skipped: list[str] | None = None) -> list[Path]:
    """All image files under `path`, searched recursively, in a deterministic order.

    The order is the sorted POSIX form of each path relative to `path`, so every host of a
    multi-host job gets the same list. Hidden files and folders (name starting with ".",
    e.g. macOS "._x.jpg" resource forks) are ignored; symlinked folders are not followed.
    A `path` that is itself an image file gives a one-element list.

    skipped: when a list, gets (sorted) the paths relative to `path` of the files left out
      although their extension names another image format (`OTHER_IMAGE_EXTENSIONS`);
      `svi_jax.data.checks.skipped_images_line` turns them into one line for the user.

    Raises:
      DataError: `path` does not exist, or holds no file with an accepted extension.
    """
    root = Path(path)
    if root.is_file():
        if is_image_path(root):
            return [root]
        raise DataError(f"{root} is not an image file: accepted extensions are {extensions_text()}")
    if not root.is_dir():
        raise DataError(f"image path {root} does not exist")
    found: list[tuple[str, Path]] = []
    others: list[str] = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            full = Path(folder) / name
            relative = full.relative_to(root).as_posix()
            if is_image_path(name):
                found.append((relative, full))
            else:
                others.append(relative)
    if skipped is not None:
        skipped.extend(sorted(o for o in others if looks_like_other_image(o)))
    if not found:
        detail = ""
        if others:
            examples = ", ".join(sorted(others)[:3])
            detail = f"; it holds {len(others)} other file(s), e.g. {examples}"
        raise DataError(
            f"no images found under {root} (searched recursively for {extensions_text()}){detail}"
        )
    found.sort(key=lambda item: item[0])
    return [full for _, full in found]


def to_rgb8(image: Image.Image | np.ndarray) -> np.ndarray:
    """Converts a Pillow image or an HW/HWC array to a contiguous uint8 (H, W, 3) array."""
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"expected an HW or HWC image with 1-4 channels, got {array.shape}")
    array = _to_uint8(array)
    if array.shape[2] in (1, 2):  # gray or gray + alpha
        array = np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _pil_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("RGB", "L"):
        return np.asarray(image)
    if mode in ("RGBA", "RGBa", "RGBX", "LA", "La"):
        return np.asarray(image)[..., : 3 if mode[0] == "R" else 1]
    if mode.startswith("I;16") or mode == "I":  # 16-bit data; "I" holds it in int32
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(image)  # read as [0, 1] data by _to_uint8
    # P, PA, 1, CMYK, YCbCr, LAB, HSV, ...
    return np.asarray(image.convert("RGB"))


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.nan_to_num(array.astype(np.float32)) * 255.0
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise DataError(
                f"{array.dtype} image values span {array.min()}..{array.max()}; "
                "only uint16 arrays are rescaled, other integers must hold 0..255"
            )
        return array.astype(np.uint8)
    raise DataError(f"unsupported image dtype {array.dtype}")


class ImageTooLargeError(DataError):
    """An image with more than MAX_PIXELS pixels; the message names the file and its size."""


def _too_large(path: Path, pixels: str) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"image {path} is too large: {pixels}, above the limit of {MAX_PIXELS:,} pixels "
        "(2**28, e.g. 16384x16384) that svi_jax reads"
    )


def _open(path: Path) -> Image.Image:
    """Image.open with our size limit in place of Pillow's warning (see MAX_PIXELS)."""
    with _OPEN_LOCK, warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS (= ours): the check after this says it in one line.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:  # above twice the limit: no size to give
            raise _too_large(path, f"more than {2 * MAX_PIXELS:,} pixels") from None


def load_image(path: PathLike, notes: list[str] | None = None) -> np.ndarray:
    """Reads an image file as uint8 (H, W, 3) RGB (conversions: see module docstring).

    notes: when a list, gets one line per thing the caller may want to tell its user: a
      multi-frame file (GIF, animated WebP/PNG, multi-page TIFF) of which only the first
      frame is read.

    Raises:
      MissingImageError: the file does not exist (a `DataError` and `FileNotFoundError`).
      DataError: the file is not a decodable image (truncated, corrupt, wrong format) or
        has more than `MAX_PIXELS` pixels (refused before decoding); the message names the
        file and the decoder's complaint.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise MissingImageError(f"image file {path} {what}")
    try:
        with _open(path) as image:
            w, h = image.size
            if w * h > MAX_PIXELS:
                raise _too_large(path, f"{w}x{h} px (W x H) = {w * h:,} pixels")
            frames = getattr(image, "n_frames", 1)  # Pillow's frame count: 1 when a still
            image.load()  # decode now (the first frame), so truncated data fails here
            if frames > 1 and notes is not None:
                notes.append(f"{path} holds {frames} frames: only the first frame is used")
            # As viewers show it; a no-op without an EXIF Orientation tag.
            return to_rgb8(ImageOps.exif_transpose(image))
    except ImageTooLargeError:
        raise
    except DataError as error:
        raise DataError(f"cannot use image {path}: {error}") from error
    except MemoryError:
        raise
    except Exception as error:  # decoders raise many types on corrupt bytes
        # the decoder's words (its class name only when it gives none): users read this line
        raise DataError(f"cannot decode image {path}: {safety.one_line(error)}") from error


def output_format(path: PathLike) -> tuple[str, dict]:
    """(Pillow format, save options) that the file name of `path` asks for.

    Raises:
      DataError: an extension not in `OUTPUT_FORMATS` (checked before any work is done).
    """
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise DataError(
            f"cannot tell the image format of output {path} from its extension "
            f"{ext or '(none)'}: name it with one of {known}"
        )
    return OUTPUT_FORMATS[ext]


def save_image(path: PathLike, image: np.ndarray) -> Path:
    """Writes a uint8 HWC (or HW) array in the format of its extension (`output_format`),
    atomically: a temporary file in the same folder, then a rename (no half-written file).

    Raises:
      DataError: unknown extension. OSError: the folder cannot be written.
    """
    path = Path(path)
    fmt, options = output_format(path)
    pixels = Image.fromarray(to_rgb8(image))
    # svi_jax.safety.write_atomic: temporary file + rename, mode 0666 & ~umask (not mkstemp's 0600)
    safety.write_atomic(path, lambda f: pixels.save(f, format=fmt, **options), make_parents=True)
    return path


def save_png(path: PathLike, image: np.ndarray) -> Path:
    """Writes a uint8 HWC (or HW) array as a lossless PNG, atomically (temp file + rename)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"save_png writes PNG files: name {path} with .png")
    return save_image(path, image)


def eval_images(path: PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (name relative to `path`, uint8 HWC RGB) for every image, in sorted order."""
    root = Path(path)
    for file in list_images(root):
        name = file.name if root.is_file() else file.relative_to(root).as_posix()
        yield name, load_image(file)


def _skimage_loader(function: str, item: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        result = getattr(skimage.data, function)()
        return result if item is None else result[item]

    return load


# Natural colour photographs shipped inside the scikit-image wheel (no pooch download;
# checked offline with scikit-image 0.26.0). Left out: 'retina' and
# 'immunohistochemistry' (medical/microscopy, not photos), grayscale and synthetic images,
# and 'cat' (the same picture as 'chelsea').
SKIMAGE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage_loader("astronaut"),  # 512x512
    "chelsea": _skimage_loader("chelsea"),  # 300x451
    "coffee": _skimage_loader("coffee"),  # 400x600
    "hubble_deep_field": _skimage_loader("hubble_deep_field"),  # 872x1000
    "motorcycle": _skimage_loader("stereo_motorcycle", 0),  # 500x741, left view
    "rocket": _skimage_loader("rocket"),  # 427x640
}
# The default split, shared by train.py and eval.py: held out by `write_skimage_split` for
# validation and the default data of eval.py; training sees only the other three.
SKIMAGE_VALIDATION_PHOTOS = ("astronaut", "coffee", "rocket")


def skimage_photos(names: Sequence[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """[(name, uint8 HWC RGB)] for `names` (default: all of SKIMAGE_PHOTOS, sorted)."""
    names = sorted(SKIMAGE_PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
    if unknown:
        raise DataError(f"unknown skimage photo(s) {unknown}; known: {sorted(SKIMAGE_PHOTOS)}")
    photos = []
    for name in names:
        try:
            photos.append((name, to_rgb8(SKIMAGE_PHOTOS[name]())))
        except Exception as error:  # e.g. a scikit-image version that downloads it
            raise DataError(f"scikit-image photo {name!r} is unavailable: {error}") from error
    return photos


def write_skimage_photos(folder: PathLike, names: Sequence[str] | None = None) -> list[Path]:
    """Writes the photos as lossless `<folder>/<name>.png`; returns the paths."""
    return [save_png(Path(folder) / f"{n}.png", image) for n, image in skimage_photos(names)]


def write_skimage_split(
    root: PathLike, validation: Sequence[str] = SKIMAGE_VALIDATION_PHOTOS
) -> tuple[Path, Path]:
    """Writes root/train (all photos but `validation`) and root/val; returns both folders."""
    root = Path(root)
    unknown = sorted(set(validation) - set(SKIMAGE_PHOTOS))
    if unknown:
        raise DataError(f"unknown skimage photo(s) {unknown}; known: {sorted(SKIMAGE_PHOTOS)}")
    train = [n for n in sorted(SKIMAGE_PHOTOS) if n not in validation]
    if not train or not validation:
        raise DataError("the split needs at least one training and one validation photo")
    write_skimage_photos(root / "train", train)
    write_skimage_photos(root / "val", list(validation))
    return root / "train", root / "val"
