"""Reads `torch.save` files without torch: nested dicts/lists of tensors become numpy arrays.

Why: the official ProgSIC checkpoints and pytorch-fid's FID Inception weights are `.pth`
files, and torch is a multi-gigabyte install that svi_jax does not otherwise need.

Both on-disk layouts are read:
  * zip (torch >= 1.6): `<root>/data.pkl` is a pickle whose tensors point, through persistent
    ids ("storage", storage class, key, location, numel), at raw little-endian buffers
    `<root>/data/<key>`; `<root>/byteorder` says "big" for big-endian writers.
  * legacy (torch < 1.6, e.g. pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`): three
    small pickles (magic number, protocol version, system info), the main pickle (persistent
    ids ("storage", storage class, key, location, numel, view metadata)), a pickled list of
    storage keys, then per key an int64 element count followed by the raw data.

Like `torch.load(weights_only=True)`, only a whitelist of globals is accepted (tensors,
parameters, storages, OrderedDict), so loading a file never runs arbitrary code.
"""

from __future__ import annotations

import codecs
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    """A file that is not a readable `torch.save` state dict.

    `top_level_keys`: for a readable file that holds no state dict of tensors (e.g. two
    candidate dicts, {"net": ..., "ema": ...}), the keys of its top-level dict; else None."""

    def __init__(self, message: str, top_level_keys: list[str] | None = None):
        super().__init__(message)
        self.top_level_keys = top_level_keys


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # pickle protocol >= 2 starts with the PROTO opcode (torch.save's)


class _StorageType:
    """Stands in for torch.FloatStorage & co. inside the pickle: only its dtype matters."""

    def __init__(self, name: str):
        if name == "BFloat16Storage":
            import ml_dtypes  # installed with jax

            self.dtype = np.dtype(ml_dtypes.bfloat16)
        elif name in _STORAGE_DTYPES:
            self.dtype = np.dtype(_STORAGE_DTYPES[name])
        else:
            raise TorchFileError(f"unsupported tensor storage type torch.{name}")


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2: a strided view of a 1-D storage, copied out.

    A None storage (the legacy reader's first pass) gives None.
    """
    if storage is None:
        return None
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[storage_offset])
    itemsize = storage.dtype.itemsize
    end = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    if any(n == 0 for n in size):
        return np.zeros(size, storage.dtype)
    if storage_offset < 0 or end > storage.size:
        raise TorchFileError("a tensor reaches outside its storage: the file is corrupt")
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], size, [s * itemsize for s in stride], writeable=False
    )
    return np.ascontiguousarray(view)


def _np_scalar(dtype, data=None):
    """numpy's pickled scalar: raw bytes of one value of `dtype`."""
    return np.frombuffer(data, dtype)[0] if data is not None else dtype.type()


def _rebuild_parameter(data, *_):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    # numpy scalars and dtypes (e.g. a best loss kept in a training checkpoint): plain data.
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell bytes
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise TorchFileError(
                f"the file holds a {module}.{name} object; only tensors, dicts and lists "
                "are read (save a plain state_dict)"
            ) from None

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or pid[0] != "storage":
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"unexpected storage type {storage_type!r}")
        storage = self._load_storage(str(key), storage_type.dtype, int(numel))
        view = pid[5] if len(pid) > 5 else None
        # Legacy storage views: (view key, offset, size).
        if view is not None and storage is not None:
            _view_key, offset, view_size = view
            storage = storage[offset : offset + view_size]
        return storage


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise TorchFileError(f"{path}: a zip file but not a torch.save archive")
        root = pickles[0][: -len("data.pkl")]
        big_endian = False
        if f"{root}byteorder" in names:
            big_endian = archive.read(f"{root}byteorder").strip() == b"big"

        def load_storage(key, dtype, numel):
            raw = archive.read(f"{root}data/{key}")
            dt = dtype.newbyteorder(">") if big_endian else dtype
            if len(raw) < numel * dt.itemsize:
                raise TorchFileError(f"{path}: storage {key} is truncated")
            return np.frombuffer(raw, dt, count=numel).astype(dtype)

        with archive.open(pickles[0]) as f:
            return _Unpickler(f, load_storage).load()


def _load_legacy(path: str):
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
            protocol = pickle.load(f)
            pickle.load(f)  # system info: endianness and type sizes of the writer
        except Exception:
            raise TorchFileError(_not_torch(path)) from None
        if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
            raise TorchFileError(f"{path}: not a PyTorch file (bad magic number)")
        # The storages' bytes follow the main pickle, so it is read twice: once to learn each
        # storage's dtype (tensors come out as None), then again with the data in hand.
        main_pickle = f.tell()
        dtypes: dict[str, np.dtype] = {}

        def record_dtype(key, dtype, numel):
            dtypes[key] = dtype

        _Unpickler(f, record_dtype).load()
        storages = {}
        size = os.fstat(f.fileno()).st_size
        for key in pickle.load(f):
            (count,) = struct.unpack("<q", f.read(8))
            dtype = dtypes.get(key, np.dtype(np.uint8))
            # a damaged count must not become a read of gigabytes: check it against the file
            if not 0 <= count * dtype.itemsize <= size - f.tell():
                raise TorchFileError(f"{path}: storage {key} is truncated or damaged")
            raw = f.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise TorchFileError(f"{path}: storage {key} is truncated")
            storages[key] = np.frombuffer(raw, dtype)
        f.seek(main_pickle)

        def load_storage(key, dtype, numel):
            if key not in storages:
                raise TorchFileError(f"{path}: storage {key} is missing")
            return storages[key]

        return _Unpickler(f, load_storage).load()


def _head(path: str, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _not_torch(path: str) -> str:
    """Why `path` could not be read: a file that starts like a zip archive or a pickle (what
    torch.save writes) but fails is truncated or damaged; anything else is no PyTorch file."""
    head = _head(path)
    if head.startswith(_ZIP_MAGIC):
        return f"{path}: truncated or damaged (starts like a zip archive but cannot be read)"
    if head.startswith(_PICKLE_PROTO):
        return f"{path}: truncated or damaged (starts like a pickle but cannot be read)"
    return f"{path}: not a PyTorch file (neither a zip archive nor a pickle)"


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise TorchFileError(f"{path}: a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")


def load_torch_file(path: str | os.PathLike):
    """The object `torch.save` wrote to `path`, with every tensor as a numpy array. The
    layout (zip or legacy) is read from the content, whatever the file's extension.

    Raises TorchFileError (a ValueError) for files that are not torch.save output ("not a
    PyTorch file"), are truncated or damaged (they start like a zip archive or a pickle but
    cannot be read), are directories, or hold objects other than tensors, dicts, lists and
    numbers; FileNotFoundError for a missing path.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except (TorchFileError, FileNotFoundError):
        raise
    except Exception as e:  # a damaged pickle can raise almost anything
        # (UnicodeDecodeError, TypeError, ValueError, ... from flipped bytes), never a traceback
        raise TorchFileError(f"{_not_torch(path)} ({type(e).__name__}: {e})") from None


WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def unwrap_state_dict(obj):
    """The state dict inside a training checkpoint: obj[k] for the first k of `WRAPPER_KEYS`
    holding a dict with tensors; else, when `obj` has no tensor of its own, its one dict value
    holding tensors (e.g. {"net": state_dict, "epoch": 3}); else `obj` itself."""
    if not isinstance(obj, dict):
        return obj
    for wrapper in WRAPPER_KEYS:  # a named wrapper only when it holds tensors: {"model":
        # {"name": ...}, "net": state_dict} falls through to the one-inner-dict rule
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and any(map(_is_array, inner.values())):
            return inner
    if any(_is_array(v) for v in obj.values()):
        return obj
    inner = [v for v in obj.values() if isinstance(v, dict) and any(map(_is_array, v.values()))]
    return inner[0] if len(inner) == 1 else obj


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat {name: array} state dict from a torch.save file; unwraps training-checkpoint
    wrappers (`unwrap_state_dict`). Raises TorchFileError (with `top_level_keys`) when no
    tensor is found at the top level after unwrapping."""
    obj = unwrap_state_dict(load_torch_file(path))
    if not isinstance(obj, dict):
        raise TorchFileError(f"{os.fspath(path)}: holds a {type(obj).__name__}, not a state dict")
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        keys = [str(k) for k in obj]
        raise TorchFileError(
            f"{os.fspath(path)}: no tensors found; top-level keys: {', '.join(keys[:10])}", keys
        )
    return out


def _is_npz(path: str) -> bool:
    """A zip of .npy members (np.savez), whatever the extension."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(n.endswith(".npy") for n in names)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A flat {name: array} state dict from an `.npz` of arrays or any `torch.save` file;
    the kind is read from the content (a zip of .npy members is an npz), the extension only
    names a file ending in .npz (any case) that is no zip a damaged npz."""
    path = os.fspath(path)
    _check_file(path)
    if path.lower().endswith(".npz") or _is_npz(path):
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            if _head(path).startswith(_ZIP_MAGIC):
                raise TorchFileError(f"{path}: truncated or damaged .npz ({e})") from None
            raise TorchFileError(f"{path}: not a readable .npz ({e})") from None
    return load_torch_state_dict(path)
