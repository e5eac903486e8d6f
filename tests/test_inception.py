"""The torch-free .pth reader and the FID InceptionV3, against files and features made by
real PyTorch / pytorch-fid (tests/data/make_inception_reference.py)."""

import pathlib
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from svi_jax.metrics import inception
from svi_jax.nn.model import build_model
from svi_jax.weights import official as checkpoint_import
from svi_jax.weights.torch_file import TorchFileError, load_torch_file, load_torch_state_dict
from tests import inception_random_weights as random_weights

DATA = pathlib.Path(__file__).resolve().parent / "data"
TORCH_FILES = ("torch_zip.pth", "torch_legacy.pth")


@pytest.mark.parametrize("name", TORCH_FILES)
def test_torch_files_read_back_exactly(name):
    """Both torch.save layouts: dtypes, shapes, strided views, offsets, scalars, empties."""
    state = load_torch_file(DATA / name)
    assert state["epoch"] == 7 and state["best_loss"] == 1.25
    assert state["param_groups"][0]["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(state["parameter"], np.ones((2, 2), np.float32))
    tensors = load_torch_state_dict(DATA / name)  # unwraps {"state_dict": ...}
    with np.load(DATA / "torch_reader_expected.npz") as expected:
        assert sorted(tensors) == sorted(expected.files)
        for key in expected.files:
            assert tensors[key].dtype == expected[key].dtype, key
            assert tensors[key].shape == expected[key].shape, key
            np.testing.assert_array_equal(tensors[key], expected[key], err_msg=key)


def test_torch_reader_rejects_bad_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pytorch file at all")
    with pytest.raises(TorchFileError, match="junk.pth"):
        load_torch_file(junk)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((DATA / "torch_legacy.pth").read_bytes()[:-40])
    with pytest.raises(TorchFileError, match="truncated"):
        load_torch_file(truncated)
    # Globals outside the whitelist are refused, never called (like weights_only=True).
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(pathlib.PurePosixPath("/etc")))
    with pytest.raises(TorchFileError, match="pathlib"):
        load_torch_file(evil)
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "missing.pth")


def test_official_checkpoint_import_reads_pth_without_torch():
    """checkpoint_import reads .pth files through the same reader: a state dict that is not
    ProgSIC's is refused by name, not by a torch import error."""
    from svi_jax.configs import tiny

    model = build_model(tiny.get_config().model)
    with pytest.raises(
        checkpoint_import.CheckpointImportError, match="no ProgSIC parameters found"
    ):
        checkpoint_import.import_official_state_dict(model, DATA / "torch_zip.pth")


@pytest.fixture(scope="module")
def reference():
    with np.load(random_weights.REFERENCE) as data:
        ref = {k: data[k] for k in data.files}
    return ref, random_weights.reference_state_dict()


def test_inception_matches_pytorch_fid(reference):
    """pytorch-fid's InceptionV3 (float64, seeded random weights) on 299² (no resize), 256²
    (upsampled) and 331×420 (downsampled) crops: pool3 features and every block's output."""
    ref, state_dict = reference
    params = inception.inception_params_from_state_dict(state_dict)
    for i, image in enumerate(random_weights.crop_images()):
        x = jnp.asarray(image[None], jnp.float32) / 255.0
        blocks = inception.inception_blocks(params, x)
        assert [b.shape[-1] for b in blocks] == [64, 192, 768, 2048]
        features = np.asarray(blocks[-1][0, 0, 0], np.float64)
        expected = ref[f"crop{i}/features"]
        scale = np.abs(expected).max()
        assert np.abs(features - expected).max() <= 1e-5 * scale, i  # float32 vs float64
        for b, block in enumerate(blocks):
            mean = np.asarray(block[0], np.float64).mean(axis=(0, 1))
            np.testing.assert_allclose(mean, ref[f"crop{i}/block{b}_mean"], atol=1e-4)
    # Different images give different features: the comparison above is not vacuous.
    assert np.abs(ref["crop0/features"] - ref["crop1/features"]).max() > 0.1 * scale


def test_feature_fn_and_weights_file(reference, tmp_path):
    _, state_dict = reference
    path = tmp_path / "fid_inception.npz"
    np.savez(path, **state_dict)
    params = inception.load_inception_params(path)
    patches = np.stack([im[:64, :64] for im in random_weights.crop_images()[:2]])
    features = inception.make_feature_fn(params)(patches)
    assert features.shape == (2, inception.FEATURE_DIM) and features.dtype == np.float32
    direct = inception.inception_features(params, jnp.asarray(patches, jnp.float32) / 255.0)
    np.testing.assert_allclose(features, np.asarray(direct), rtol=1e-5, atol=1e-6)
    del state_dict["Mixed_6b.branch7x7_2.bn.running_var"]
    np.savez(path, **state_dict)
    with pytest.raises(inception.InceptionWeightsError, match="Mixed_6b.branch7x7_2"):
        inception.load_inception_params(path)


def test_bilinear_resize_matrix_is_pytorch_interpolation():
    same = inception.bilinear_resize_matrix(7, 7)
    np.testing.assert_array_equal(same, np.eye(7, dtype=np.float32))
    up = inception.bilinear_resize_matrix(2, 4)  # sources -0.25 (clamped), 0.25, 0.75, 1.25
    np.testing.assert_allclose(up, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], rtol=0, atol=1e-7)
    down = inception.bilinear_resize_matrix(331, 299)
    np.testing.assert_allclose(down.sum(axis=1), 1.0, atol=1e-6)
