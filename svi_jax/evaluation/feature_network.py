"""The FID/KID feature network of an evaluation: where its weights are and how it is loaded."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib

from svi_jax.evaluation.sources import EvalInputError
from svi_jax.metrics import inception
from svi_jax.weights.torch_file import TorchFileError

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"


def find_inception_weights() -> pathlib.Path | None:
    """pytorch-fid's FID weights where they already are, or None.

    Looks at $SVI_INCEPTION_WEIGHTS, then torch hub's cache ($TORCH_HOME, else
    ~/.cache/torch; `hub/checkpoints/`), where pytorch-fid keeps the file it downloaded.
    """
    explicit = os.environ.get("SVI_INCEPTION_WEIGHTS")
    if explicit:
        return pathlib.Path(explicit)  # a wrong path should fail loudly, not be skipped
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    cached = pathlib.Path(torch_home) / "hub" / "checkpoints" / FID_WEIGHTS_NAME
    return cached if cached.is_file() else None


def load_feature_fn(path: str | None):
    """The FID/KID feature network named by `--inception`, or None.

    A weights file (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, read without torch,
    or an .npz of the same state dict) gives pytorch-fid's FID InceptionV3
    (`svi_jax.metrics.inception`). A `.py` file may instead define its own
    `feature_fn(patches)`: uint8 (N, p, p, 3) -> (N, D), resizing and scaling as it needs.
    """
    if not path:
        return None
    file = pathlib.Path(path)
    if not file.is_file():
        raise EvalInputError(f"--inception {path}: no such file")
    if file.suffix == ".py":
        fn = _load_python_feature_fn(file)
        network = f"feature_fn of {file.name}"
    else:
        try:
            fn = inception.make_feature_fn(inception.load_inception_params(file))
        except (inception.InceptionWeightsError, TorchFileError) as error:
            raise EvalInputError(f"--inception {path}: {error}") from None
        network = "pytorch-fid 0.3.0 FID InceptionV3 (svi_jax.metrics.inception)"

    def feature_fn(patches):
        return fn(patches)

    # Recorded in results.json: FIDs from different networks or weights do not compare.
    sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
    feature_fn.description = {"network": network, "file": str(file), "sha256": sha256}
    return feature_fn


def _load_python_feature_fn(file: pathlib.Path):
    spec = importlib.util.spec_from_file_location("_svi_eval_inception", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # user code
        raise EvalInputError(f"cannot load {file}: {type(error).__name__}: {error}") from None
    fn = getattr(module, "feature_fn", None)
    if not callable(fn):
        raise EvalInputError(f"{file} defines no callable feature_fn")
    return fn
