"""Makes tests/data/inception_reference.npz and the .pth reader fixtures, with real PyTorch.

Needs torch, torchvision and pytorch-fid 0.3.0 (not svi_jax's requirements; run it in a
separate environment):

    python tests/data/make_inception_reference.py

pytorch-fid's own InceptionV3 is built with the seeded random weights of
tests/inception_random_weights.py (its weight download is replaced by them) and run in
float64 on the crops listed there. The file keeps the state-dict key names and shapes, the
pool3 features and the spatial means of the four block outputs.
"""

import json
import pathlib
import sys

import numpy as np
import pytorch_fid
import pytorch_fid.inception as pfi
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import inception_random_weights as weights  # noqa: E402


def make_inception_reference() -> None:
    template = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    shapes = {k: tuple(v.shape) for k, v in template.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in weights.random_state_dict(shapes).items()}
    pfi.load_state_dict_from_url = lambda *args, **kwargs: state  # no download
    net = pfi.InceptionV3([0, 1, 2, 3], resize_input=True, normalize_input=True)
    net = net.double().eval()
    out = {"keys/json": json.dumps({k: list(s) for k, s in shapes.items()})}
    for i, image in enumerate(weights.crop_images()):
        x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0
        with torch.no_grad():
            blocks = net(x)
        out[f"crop{i}/features"] = blocks[3][0, :, 0, 0].numpy()
        for b, block in enumerate(blocks):
            out[f"crop{i}/block{b}_mean"] = block[0].mean(dim=(1, 2)).numpy()
    out["meta/json"] = json.dumps(
        {
            "torch": torch.__version__,
            "pytorch_fid": pytorch_fid.__version__,
            "dtype": "float64",
            "crops": weights.CROPS,
            "seed": weights.SEED,
        }
    )
    np.savez_compressed(HERE / "inception_reference.npz", **out)


def make_reader_fixtures() -> None:
    """Small state dicts in both torch.save layouts, plus the arrays they must read back as."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    tensors = {
        "float32": base,
        "float64": torch.linspace(-1, 1, 5, dtype=torch.float64),
        "float16": torch.tensor([0.5, -2.25, 65504.0], dtype=torch.float16),
        "int64": torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64),
        "uint8": torch.arange(7, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "transposed": base.t(),  # non-contiguous strides over a shared storage
        "slice": base[1:3, 2:5],  # storage offset
        "empty": torch.zeros(0, 3),
    }
    # Beside the state dict: a Parameter, a numpy scalar and plain Python values, as training
    # checkpoints hold them.
    state = {
        "state_dict": dict(tensors),
        "epoch": 7,
        "best_loss": np.float64(1.25),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "amsgrad": False, "name": "g"}],
    }
    torch.save(state, HERE / "torch_zip.pth")
    torch.save(state, HERE / "torch_legacy.pth", _use_new_zipfile_serialization=False)
    np.savez(HERE / "torch_reader_expected.npz", **{k: v.numpy() for k, v in tensors.items()})


if __name__ == "__main__":
    make_inception_reference()
    make_reader_fixtures()
