"""Do .sic files decode anywhere? Compress on one machine, decode on another, compare.

    # on the machine under test (e.g. a GPU): compress, decode there, save everything
    python benchmarks/codec_roundtrip.py --checkpoint runs/tiny --save gpu_roundtrip.npz
    # here (any other backend / thread count): decode the same files, compare
    python benchmarks/codec_roundtrip.py --checkpoint runs/tiny --verify gpu_roundtrip.npz

Without --checkpoint the fixed random tiny model of tests/test_codec.py's golden file is used
(flax_init_params(tiny, PRNGKey(0)) on this machine's default backend; to compare files across
backends, save it once with svi_jax.weights.export.save_exported_model and pass that export to
both runs). Images: a `--small HxW` crop of scikit-image's `coffee` (default 256x384: the
input of the public report of the GPU bug) and a `--large HxW` resize of `astronaut` (default
1024x1536) to exercise the banded analysis. tests/data/golden_h200.npz is a reduced copy (file
bytes, symbols, level 1/8/16 pixels) of a `--small 128x192 --small-only` run on an H200 (jax
0.11.2) with the golden model exported from a CPU; tests/test_codec.py decodes it.

--save: per image, compresses twice (the bytes must repeat: the encoder's tables come from the
integer entropy model), decodes every level the file holds in the same process (a corrupt
stream raises BitstreamError: the original GPU bug), records the decoded symbols and the
level 1 / 8 / 16 pixels, and writes them with the file bytes into one .npz.
--verify: decodes the saved files here and requires identical symbols (the guarantee: integer
entropy path) and pixels within ±1 (g_s is float; backends round differently).
Exit status 0 when every check passes, 1 otherwise; one line per check either way.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import jax
import numpy as np
from PIL import Image

from svi_jax.codec import BitstreamError, Codec
from svi_jax.configs import tiny
from svi_jax.data.image_io import skimage_photos
from svi_jax.weights.export import ExportError, load_exported_model

LEVELS = (1, 8, 16)
GOLDEN_KEY = 0  # tests/test_codec.py's fixed random tiny model


def load_codec(checkpoint: str | None) -> Codec:
    if checkpoint:
        config, params, digest = load_exported_model(checkpoint)
        return Codec(params, config, model_hash=digest)
    from svi_jax.nn.model import build_model, flax_init_params

    config = tiny.get_config()
    params = flax_init_params(build_model(config.model), jax.random.PRNGKey(GOLDEN_KEY))
    return Codec(params, config)


def test_images(small: str, large: str) -> dict[str, np.ndarray]:
    """{name: uint8 (H, W, 3)}: a `small` (H x W) crop of coffee at (50, 100) and `large`
    (H x W) resized astronaut."""
    photos = dict(skimage_photos(["coffee", "astronaut"]))
    sh, sw = (int(v) for v in small.lower().split("x"))
    h, w = (int(v) for v in large.lower().split("x"))
    big = Image.fromarray(photos["astronaut"]).resize((w, h), Image.Resampling.LANCZOS)
    return {
        f"coffee_{sh}x{sw}": np.ascontiguousarray(photos["coffee"][50 : 50 + sh, 100 : 100 + sw]),
        f"astronaut_{h}x{w}": np.asarray(big),
    }


def decode_all(codec: Codec, data: bytes) -> dict[str, np.ndarray]:
    """Symbols of the whole file and pixels at LEVELS (those the file holds)."""
    _, z_sym, y_buf, hyper, top = codec.decode_symbols(data)
    out = {"z_symbols": z_sym, "y_symbols": y_buf, "hyper": np.asarray(hyper)}
    for level in LEVELS:
        if level <= top:
            out[f"level{level}"] = codec.decompress(data, level=level)
    return out


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:12]


def save(codec: Codec, images: dict, path: str) -> bool:
    ok, arrays = True, {}
    for name, image in images.items():
        t0 = time.perf_counter()
        data = codec.compress(image)
        t1 = time.perf_counter()
        again = codec.compress(image)
        print(f"{name}: {len(data)} bytes, compress {t1 - t0:.2f} s (first, compiles)", flush=True)
        if again != data:
            ok = False
            print(f"FAIL {name}: compressing twice gave different bytes", flush=True)
        try:
            t0 = time.perf_counter()
            decoded = decode_all(codec, data)
            print(f"ok   {name}: decodes in the same process ({time.perf_counter() - t0:.2f} s)")
        except BitstreamError as e:
            print(f"FAIL {name}: the file does not decode where it was made: {e}", flush=True)
            ok, decoded = False, {}
        arrays[f"{name}/sic"] = np.frombuffer(data, np.uint8)
        for key, value in decoded.items():
            arrays[f"{name}/{key}"] = value
    arrays["device"] = np.array(str(jax.devices()[0].device_kind))
    arrays["model_hash"] = np.array(codec.model_hash.hex())
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} (made on {jax.devices()[0].device_kind}, jax {jax.__version__})")
    return ok


def verify(codec: Codec, path: str) -> bool:
    saved = np.load(path)
    made_on = str(saved["device"])
    theirs = str(saved["model_hash"]) if "model_hash" in saved.files else None
    if theirs and theirs != codec.model_hash.hex():
        print(
            f"FAIL {path} was made with model {theirs[:12]}, this one is "
            f"{codec.model_hash.hex()[:12]}: pass the --checkpoint used with --save"
        )
        return False
    ok = True
    for name in sorted({k.split("/")[0] for k in saved.files if "/" in k}):
        data = saved[f"{name}/sic"].tobytes()
        try:
            here = decode_all(codec, data)
        except BitstreamError as e:
            print(f"FAIL {name}: a file made on {made_on} does not decode here: {e}")
            ok = False
            continue
        for key, value in here.items():
            if f"{name}/{key}" not in saved.files:
                print(f"FAIL {name}/{key}: {made_on} could not decode it (see --save's output)")
                ok = False
                continue
            theirs = saved[f"{name}/{key}"]
            if key.startswith("level"):
                diff = np.abs(value.astype(np.int16) - theirs.astype(np.int16))
                good = diff.max() <= 1
                detail = f"max |diff| {diff.max()}, {100 * np.mean(diff > 0):.3f}% differ"
            else:
                good = np.array_equal(value, theirs)
                detail = f"sha {sha(value)} here, {sha(theirs)} on {made_on}"
            ok &= bool(good)
            print(f"{'ok  ' if good else 'FAIL'} {name}/{key}: {detail}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="export / workdir (default: golden tiny)")
    ap.add_argument("--large", default="1024x1536", help="H x W of the larger test photo")
    ap.add_argument("--small", default="256x384", help="H x W of the coffee crop (the bug's)")
    ap.add_argument("--small-only", action="store_true", help="only the coffee crop")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", metavar="NPZ", help="compress + decode here, write NPZ")
    mode.add_argument("--verify", metavar="NPZ", help="decode NPZ's files here and compare")
    args = ap.parse_args()
    try:
        codec = load_codec(args.checkpoint)
        if args.verify:
            with np.load(args.verify) as saved:  # unreadable input: say so before any work
                if "device" not in saved.files:
                    raise ValueError(f"{args.verify} is not a --save file of this script")
    except (OSError, ValueError, ExportError) as e:
        print(f"codec_roundtrip: {e}", file=sys.stderr)
        return 2
    print(f"backend {jax.default_backend()}: {jax.devices()}", flush=True)
    if args.save:
        images = test_images(args.small, args.large)
        if args.small_only:
            images = dict(list(images.items())[:1])
        ok = save(codec, images, args.save)
    else:
        ok = verify(codec, args.verify)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
