"""What every entry point (svi-codec, train.py, eval.py) shares to fail safely.

* `refuse_overwrite(inputs, outputs)`: an output that is one of the command's own inputs
  (same file after resolving symlinks, `./x` vs `x`, hard links) is refused before any work.
* `runtime_failure(error)`: a one-line message for out-of-memory and other runtime failures
  (XLA's `JaxRuntimeError`, `MemoryError`), or None for errors that are bugs (tracebacks).
* `write_atomic(path, data)`: the one temporary-file-and-rename writer (svi-codec outputs,
  every image `svi_jax.data.image_io.save_image` writes, eval.py's results). The file gets
  the mode a plain `open(path, "w")` would give it: the mode of the file it replaces, else
  0666 & ~umask (mkstemp alone would leave 0600).
* `output_target(path)`: where a write to `path` lands. A symlink is followed to its target
  (as `open(path, "w")` does): the target is replaced and the link kept, also for a dangling
  link (its target is created). A rename cannot write through a link, so `write_atomic` and
  `check_output_folder` resolve it first.
* `check_output_folder(path)`: refuses, before any work, an output whose folder is missing
  or cannot take a new file (tries to create the temporary file there).

Hard links: an atomic replace puts a new file under the name it writes; other hard links to
the old file keep the old content (`truncate --in-place` of a hard-linked file cuts that name
only). Readers of the name never see a half-written file, which is the point of the rename.

`jax.errors.JaxRuntimeError` exists in jax 0.10.2 and 0.11.x (it is jaxlib's XlaRuntimeError
under its public name); it is looked up lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

# Phrases with which XLA (CPU, GPU, TPU) reports an allocation failure.
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "Allocation", "allocat")


class OverwriteError(ValueError):
    """An output path names one of the command's inputs; the message names both."""


class OutputPathError(ValueError):
    """An output path cannot be written (missing folder, not writable, a folder itself); the
    message names the path."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` are the same file: equal resolved paths (symlinks, `./x`, `x`)
    or, when both exist, the same inode (hard links)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when `path` (resolved) is `folder` or lies inside it."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def refuse_overwrite(
    inputs: Iterable[str | os.PathLike | None], outputs: Iterable[str | os.PathLike | None]
) -> None:
    """Raises OverwriteError when an output is the same file as an input (None entries skip)."""
    ins = [i for i in inputs if i]
    for out in outputs:
        if not out:
            continue
        for source in ins:
            if same_file(out, source):
                raise OverwriteError(
                    f"output {out} is the input file {source}: refusing to overwrite an input; "
                    "choose another output path"
                )


def output_target(path: str | os.PathLike) -> Path:
    """The file a write to `path` replaces: `path` itself, or when `path` is a symlink (also
    a dangling one, or a chain of them) the file it points to, as `open(path, "w")` would
    write it. Only the final component is followed: folders in `path` stay as given, so
    messages name them as the user typed them.

    Raises:
      OutputPathError: a symlink loop (or a chain over 40 links), naming `path`.
    """
    target = Path(path)
    for _ in range(40):  # the kernel's own limit on links followed (ELOOP)
        if not target.is_symlink():
            return target
        target = target.parent / os.readlink(target)
    raise OutputPathError(f"output {path} is a symlink loop: give a file name")


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc); elsewhere
    set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(folder: bool = False) -> int:
    """The permission bits open() (0666) or mkdir() (0777) give a new file under the umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def check_output_folder(path: str | os.PathLike) -> None:
    """Raises OutputPathError when `path` cannot be written atomically: its folder is missing
    (never created silently), is not a folder, or refuses a new file (checked by creating and
    removing the temporary file `write_atomic` will use), or `path` is itself a folder.
    A symlink `path` is checked where the write lands (`output_target`)."""
    target = output_target(path)
    folder = target.parent
    if not folder.exists():
        raise OutputPathError(
            f"no such folder: {folder} (for output {_named(path)}); create it first"
        )
    if not folder.is_dir():
        raise OutputPathError(f"{folder} is not a folder (for output {_named(path)})")
    if target.is_dir():
        raise OutputPathError(f"output {_named(path)} is a folder: give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputPathError(f"cannot write into folder {folder}: {reason}") from None
    os.close(fd)
    os.unlink(tmp)


def _named(path: str | os.PathLike) -> str:
    """`path`, and where it points when it is a symlink: `link.sic -> /data/real.sic`."""
    target = output_target(path)
    return str(path) if target == Path(path) else f"{path} -> {target}"


def write_atomic(
    path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None], *, make_parents=False
) -> Path:
    """Writes `data` (bytes, or a function writing to a binary file) to `path` through a
    temporary file in the same folder and a rename: readers see the old file or the whole new
    one, and an error (Ctrl-C included) leaves no temporary behind.

    Mode: that of the file being replaced, else 0666 & ~umask, as `open(path, "w")` gives;
    mkstemp creates 0600, which would hide outputs from other users and programs.
    Symlinks: a `path` that is a symlink writes its target (`output_target`) and keeps the
    link; a rename onto the link itself would replace the link and leave the target old.
    Hard links: the name gets a new file, other links keep the old content (module docstring).
    make_parents: create missing folders (callers that own an output tree); otherwise a
    missing folder is an OSError. Raises OSError when the folder cannot be written.
    """
    target = output_target(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _jax_runtime_error() -> type[BaseException] | None:
    try:
        import jax

        return jax.errors.JaxRuntimeError
    except (ImportError, AttributeError):  # pragma: no cover - jax without the alias
        return None


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, or an XLA runtime error whose message reports an allocation failure."""
    if isinstance(error, MemoryError):
        return True
    runtime = _jax_runtime_error()
    text = str(error)
    return bool(runtime and isinstance(error, runtime) and any(m in text for m in OOM_MARKERS))


def one_line(error: BaseException, limit: int = 300) -> str:
    """The error message on one line, cut to `limit` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def runtime_failure(error: BaseException, what: str) -> str | None:
    """One line for an out-of-memory or XLA runtime failure of `what` (e.g. "compressing x"),
    or None when `error` is neither (let it surface as the bug it is)."""
    if is_out_of_memory(error):
        return (
            f"out of memory while {what} ({type(error).__name__}: {one_line(error, 160)}); "
            "free memory, use a smaller image/batch, or a machine with more memory"
        )
    runtime = _jax_runtime_error()
    if runtime is not None and isinstance(error, runtime):
        return f"XLA runtime failure while {what}: {one_line(error, 200)}"
    return None


@contextlib.contextmanager
def fail_in_one_line(program: str, user_errors: tuple[type[BaseException], ...] = ()):
    """Ends the process with one line on stderr and exit status 1 for `user_errors` and for
    out-of-memory / XLA runtime failures; other exceptions (bugs) keep their traceback.

    Outputs are written atomically by every entry point, so nothing half-written remains."""
    try:
        yield
    except user_errors as error:
        print(f"{program}: error: {one_line(error, 1000)}", file=sys.stderr)
        sys.exit(1)
    except (MemoryError, RuntimeError) as error:
        line = runtime_failure(error, f"running {program}")
        if line is None:
            raise
        print(f"{program}: error: {line}", file=sys.stderr)
        sys.exit(1)


def training_errors() -> tuple[type[BaseException], ...]:
    """The user-facing error types of a training run (each message names its file or flag)."""
    from svi_jax.data.image_io import DataError
    from svi_jax.training.checkpointing import CheckpointError
    from svi_jax.training.loop import TrainingDivergedError
    from svi_jax.training.preflight import PreflightError
    from svi_jax.weights.export import ExportError

    return (
        DataError,
        PreflightError,
        CheckpointError,
        ExportError,
        OverwriteError,
        TrainingDivergedError,
    )
