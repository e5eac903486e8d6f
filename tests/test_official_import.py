"""Reading official checkpoints (svi_jax.weights.official / torch_file) the ways users hand
them over: suffixes in any case, training-checkpoint wrappers, damaged files, directories,
files of something else, and another config's checkpoint (a short summary, not 21 lines)."""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import pickletools
import shutil
import struct
import sys
import types
import zipfile

import chex
import jax
import numpy as np
import pytest

import svi_jax
from svi_jax import CheckpointImportError, CheckpointMismatchError
from svi_jax.configs import paper, tiny
from svi_jax.weights.torch_file import TorchFileError, load_torch_state_dict, unwrap_state_dict

DATA = pathlib.Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def tiny_state():
    model = svi_jax.build_model(tiny.get_config().model)
    params = svi_jax.init_params(model, jax.random.PRNGKey(3))
    return model, params, svi_jax.export_official_state_dict(params)


def _write_torch_zip(path: pathlib.Path, obj, monkeypatch) -> None:
    """A torch.save zip archive of `obj` (dicts of float32 arrays) without torch: stand-in
    `torch.FloatStorage` / `torch._utils._rebuild_tensor_v2` objects are pickled by name, as
    torch pickles its own (the reader resolves those names to its own functions)."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: only pickled by name")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = (
        FloatStorage,
        _rebuild_tensor_v2,
        utils,
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    blobs = {}

    class Storage:
        def __init__(self, array):
            self.key, self.array = str(len(blobs)), np.ascontiguousarray(array, np.float32)
            blobs[self.key] = self.array.tobytes()

    class Tensor:
        def __init__(self, array):
            self.array = np.asarray(array, np.float32)

        def __reduce__(self):
            shape = self.array.shape
            stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
            args = (Storage(self.array), 0, shape, stride, False, collections.OrderedDict())
            return _rebuild_tensor_v2, args

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, Storage):
                return ("storage", FloatStorage, value.key, "cpu", value.array.size)
            return None

    def tensors(value):
        if isinstance(value, dict):
            return {k: tensors(v) for k, v in value.items()}
        return Tensor(value) if isinstance(value, np.ndarray) else value

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(tensors(obj))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for key, raw in blobs.items():
            archive.writestr(f"archive/data/{key}", raw)


def test_wrapped_training_checkpoints_are_unwrapped(tiny_state, tmp_path, monkeypatch):
    model, params, state = tiny_state
    wrapped = {
        "plain.pth": state,
        "sd.pth": {"state_dict": state, "epoch": 3},
        "net.pth": {"net": state, "epoch": 3, "optimizer": {}},  # one dict of tensors
        "Model.PTH.TAR": {"model": state},
    }
    for name, obj in wrapped.items():
        _write_torch_zip(tmp_path / name, obj, monkeypatch)
        got = svi_jax.import_official_state_dict(model, tmp_path / name)
        chex.assert_trees_all_equal(got, params)
    got = svi_jax.import_official_state_dict(model, {"net": state, "epoch": 3})  # a mapping
    chex.assert_trees_all_equal(got, params)
    two = {"net": state, "ema": state, "epoch": 3}  # two candidates: no guess
    assert unwrap_state_dict(two) is two
    _write_torch_zip(tmp_path / "two.pth", two, monkeypatch)
    with pytest.raises(CheckpointImportError) as error:
        svi_jax.import_official_state_dict(model, tmp_path / "two.pth")
    assert str(error.value) == (
        f"no ProgSIC parameters found in {tmp_path / 'two.pth'}; top-level keys: net, ema, epoch"
    )
    assert not isinstance(error.value, CheckpointMismatchError)


def test_suffixes_in_any_case_and_content_sniffing(tiny_state, tmp_path):
    model, params, state = tiny_state
    np.savez(tmp_path / "good.npz", **state)
    for name in ("good.NPZ", "npz_content.pth", "npz_content.ckpt"):  # kind read from content
        shutil.copy(tmp_path / "good.npz", tmp_path / name)
        chex.assert_trees_all_equal(
            svi_jax.import_official_state_dict(model, tmp_path / name), params
        )
    # torch files of another network under every accepted suffix: read, then refused by name
    for source in ("torch_zip.pth", "torch_legacy.pth"):
        for suffix in (".PTH", ".pt", ".ckpt", ".tar", ".pth.tar", ".Pth.Tar"):
            path = tmp_path / f"x{suffix}"
            shutil.copy(DATA / source, path)
            with pytest.raises(CheckpointImportError, match="no ProgSIC parameters found"):
                svi_jax.import_official_state_dict(model, path)
    shutil.copy(DATA / "torch_zip.pth", tmp_path / "x.bin")
    with pytest.raises(CheckpointImportError, match=r"unsupported checkpoint format: .*\.pth\.tar"):
        svi_jax.import_official_state_dict(model, tmp_path / "x.bin")


def test_damaged_and_foreign_files_say_which(tiny_state, tmp_path):
    model, _, _ = tiny_state
    cases = {}
    for source in ("torch_zip.pth", "torch_legacy.pth"):  # cut in half: truncated, not "foreign"
        raw = (DATA / source).read_bytes()
        (tmp_path / f"cut_{source}").write_bytes(raw[: len(raw) // 2])
        cases[f"cut_{source}"] = "truncated or damaged"
    (tmp_path / "notes.pth").write_text("hello\n")
    cases["notes.pth"] = "not a PyTorch file"
    np.savez(tmp_path / "full.npz", a=np.zeros(1000))  # an npz cut in half: a damaged zip
    npz = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(npz[: len(npz) // 2])
    cases["cut.npz"] = "truncated or damaged .npz"
    np.savez(tmp_path / "other.npz", a=np.zeros(3), b=np.ones((2, 2)))
    cases["other.npz"] = "no ProgSIC parameters found in {}; top-level keys: a, b"
    (tmp_path / "dir.pth").mkdir()
    cases["dir.pth"] = "{} is a directory, not a checkpoint file"
    for name, expected in cases.items():
        path = tmp_path / name
        with pytest.raises(CheckpointImportError) as error:
            svi_jax.import_official_state_dict(model, path)
        message = str(error.value)
        assert expected.format(path) in message and "\n" not in message, (name, message)
        assert not isinstance(error.value, CheckpointMismatchError), name


def test_another_configs_checkpoint_is_a_short_mismatch_summary(tiny_state):
    _, _, state = tiny_state
    big = svi_jax.build_model(paper.get_config().model)
    with pytest.raises(CheckpointMismatchError) as error:
        svi_jax.import_official_state_dict(big, state)
    message, problems = str(error.value), error.value.problems
    assert "\n" not in message and len(problems) > 100
    assert message.startswith(
        f"checkpoint does not match the model config ({len(problems)} problems, checkpoint has "
        "64 latent channels, the config 512): "
    )
    assert message.count("shape mismatch for") == 3 and message.endswith("; ...")
    # both shapes in the official (PyTorch) layout
    assert (
        "shape mismatch for context_model.layer.weight: checkpoint (128, 64, 5, 5), the config "
        "needs (1024, 512, 5, 5)" in problems
    )
    assert isinstance(error.value, CheckpointImportError)  # the old except clauses still catch it


def test_flipped_bytes_end_in_torch_file_error_or_load(tmp_path):
    """Damaged bytes anywhere (not only a cut) never escape as a bare UnicodeDecodeError /
    TypeError / ValueError: eval.py catches TorchFileError only."""
    rng = np.random.default_rng(0)
    for source in ("torch_zip.pth", "torch_legacy.pth"):
        raw = np.frombuffer((DATA / source).read_bytes(), np.uint8)
        for trial in range(100):
            damaged = raw.copy()
            spots = rng.choice(raw.size, 3, replace=False)
            damaged[spots] = rng.integers(0, 256, 3, dtype=np.uint8)
            path = tmp_path / f"{trial}_{source}"
            path.write_bytes(damaged.tobytes())
            try:
                load_torch_state_dict(path)
            except TorchFileError as error:
                assert "\n" not in str(error), (source, trial, str(error))


def test_named_wrapper_without_tensors_is_not_taken():
    state = {"conv.weight": np.zeros((2, 2), np.float32)}
    wrapped = {"model": {"name": "ProgSIC"}, "net": state, "epoch": 3}
    assert unwrap_state_dict(wrapped) is state
    assert unwrap_state_dict({"model": state, "net": state}) is state  # the named one first


def test_a_tensor_of_the_wrong_rank_is_a_shape_mismatch(tiny_state):
    model, _, state = tiny_state
    key = "context_model.layer.weight"
    broken = dict(state, **{key: state[key].reshape(*state[key].shape[:2], -1)})  # 4-D -> 3-D
    with pytest.raises(CheckpointMismatchError) as error:
        svi_jax.import_official_state_dict(model, broken)
    assert list(error.value.problems) == [
        f"shape mismatch for {key}: checkpoint {broken[key].shape}, the config needs "
        f"{state[key].shape}"
    ]


def test_a_damaged_storage_size_is_refused_before_it_is_read(tmp_path):
    """A legacy file's storage sizes are checked against the file before reading, so a
    damaged size never turns into a read (allocation) of terabytes."""
    raw = bytearray((DATA / "torch_legacy.pth").read_bytes())
    f = io.BytesIO(bytes(raw))
    for _ in range(4):  # magic, protocol, system info, the main pickle
        for _ in pickletools.genops(f):
            pass
    keys = pickle.load(f)
    raw[f.tell() : f.tell() + 8] = struct.pack("<q", 2**50)  # the first storage's count
    (tmp_path / "big.pth").write_bytes(bytes(raw))
    with pytest.raises(TorchFileError, match=f"storage {keys[0]} is truncated or damaged$"):
        load_torch_state_dict(tmp_path / "big.pth")
