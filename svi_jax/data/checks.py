"""Reports on a folder of images for the user: files skipped for their extension, and every
file that does not decode, named at once (eval.py's error, the training preflight's warning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from svi_jax import safety
from svi_jax.data.image_io import DataError, PathLike, extensions_text, load_image

# At most this many files are named one per line in `bad_images_text` (then "and N more").
MAX_LISTED_FILES = 20


def skipped_images_line(root: PathLike, skipped: Sequence[str], limit: int = 5) -> str | None:
    """One line naming the files `list_images(root, skipped=...)` left out (None if none)."""
    if not skipped:
        return None
    shown = ", ".join(skipped[:limit]) + (
        f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    )
    return (
        f"{len(skipped)} file(s) under {root} look like images but are skipped (extension not "
        f"read by svi_jax): {shown}; convert them to one of {extensions_text()}"
    )


def find_bad_images(
    files: Sequence[PathLike],
    notes: list[str] | None = None,
    sizes: list[tuple[int, int]] | None = None,
) -> list[tuple[Path, str]]:
    """Decodes every file (as `load_image` does); [(file, one-line reason)] of those that fail.

    notes: as for `load_image` (multi-frame files). sizes: when given, the (H, W) in pixels
    of each file that decodes is appended to it, in order (eval.py's metrics need them).
    Costs one full decode per file.
    """
    bad = []
    for file in files:
        try:
            image = load_image(file, notes)
        except DataError as error:
            bad.append((Path(file), failure_reason(error)))
        else:
            if sizes is not None:
                sizes.append(image.shape[:2])
    return bad


def failure_reason(error: DataError) -> str:
    """One line: why `load_image` failed, in the decoder's words (without its file prefix)."""
    return safety.one_line(error.__cause__ or error)


def bad_images_text(bad: Sequence[tuple[Path, str]], total: int, where: str) -> str:
    """A count line, then one "  file: reason" line per bad file (at most MAX_LISTED_FILES,
    then "  ... and N more")."""
    lines = [f"{len(bad)} of {total} images in {where} cannot be decoded:"]
    lines += [f"  {file}: {reason}" for file, reason in bad[:MAX_LISTED_FILES]]
    if len(bad) > MAX_LISTED_FILES:
        lines.append(f"  ... and {len(bad) - MAX_LISTED_FILES} more")
    return "\n".join(lines)
