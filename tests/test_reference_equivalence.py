"""Numerical equivalence with the official PyTorch ProgSIC (reference set A, float32).

Levels, M, shapes and tolerances are read from the reference data and its README, so another
reference set of the same format can be dropped in (SVI_REFERENCE_DIR).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_tolerances import parse_tolerances

import svi_jax
from svi_jax.configs import paper, tiny
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.entropy_models import gaussian_likelihood
from svi_jax.nn.model import ProgressiveSIC


def nhwc(a):
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
    return np.asarray(a).transpose(0, 3, 1, 2)


def model_config_for(ref):
    """configs/tiny.py is the reference's small config; check it against the file's shapes."""
    cfg = tiny.get_config()
    y_channels = ref["y"].shape[1]
    assert y_channels == cfg.model.latent_channels, "reference set is not the small config"
    return cfg


@pytest.fixture(scope="module")
def setup(reference_set):
    ref, readme = reference_set
    tol = parse_tolerances(readme)
    cfg = model_config_for(ref)
    model = svi_jax.build_model(cfg.model)
    params = svi_jax.import_official_state_dict(model, ref)
    return ref, tol, cfg, model, params


def assert_tensor(ours, ref, tol, name):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    bound = tol.tensor * max(1.0, float(np.abs(ref).max(initial=0.0)))
    err = float(np.abs(ours - ref).max(initial=0.0))
    assert err <= bound, f"{name}: max|diff| {err:.3g} > {bound:.3g}"


def assert_scalar(ours, ref, rtol, name, atol=0.0):
    ours, ref = float(ours), float(ref)
    assert abs(ours - ref) <= rtol * abs(ref) + atol, f"{name}: {ours!r} vs reference {ref!r}"


def detail_uniform_full(u_tail, y_shape, level, width):
    """Official draws cover only channels >= width*level; ours span all channels."""
    full = np.zeros((u_tail.shape[0], y_shape[1], *y_shape[2:]), np.float32)
    full[:, width * level :] = u_tail
    return nhwc(full)


def levels_of(ref):
    return [int(v) for v in ref["meta/levels"]]


def test_deterministic_intermediates(setup):
    ref, tol, cfg, model, params = setup
    x = nhwc(ref["x"])
    lat = jax.jit(lambda p, x: svi_jax.encode_latents(model, p, x))(params, x)
    for name, ours in [
        ("y", lat.y),
        ("z", lat.z),
        ("hyper", lat.hyper),
        ("scales_hat", lat.scales),
        ("means_hat", lat.means),
    ]:
        assert_tensor(nchw(ours), ref[name], tol, name)
    # discrete values must be identical
    np.testing.assert_array_equal(nchw(lat.y_hat), ref["y_hat"])
    np.testing.assert_array_equal(nchw(lat.z_hat), ref["z_hat"])

    apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
    assert_tensor(apply(ProgressiveSIC.z_medians)[:, None, None], ref["z_medians"], tol, "med")
    assert_tensor(
        nchw(apply(ProgressiveSIC.z_likelihood, lat.z_hat)),
        ref["z_likelihoods"],
        tol,
        "z_likelihoods",
    )
    assert_tensor(nchw(apply(ProgressiveSIC.context, lat.y_hat)), ref["ctx"], tol, "ctx")
    y_lik = gaussian_likelihood(lat.y_hat, lat.means, lat.scales)
    assert_tensor(nchw(y_lik), ref["y_likelihoods_round"], tol, "y_likelihoods_round")
    x_hat = jax.jit(lambda p, y: model.apply({"params": p}, y, method=ProgressiveSIC.synthesis))(
        params, lat.y_hat
    )
    np.testing.assert_allclose(nchw(x_hat), ref["x_hat_full"], atol=tol.image_atol, rtol=0)
    assert_scalar(svi_jax.aux_loss(model, params), ref["aux_loss"], tol.scalar_rtol, "aux_loss")


def test_test_pass_every_level(setup):
    """The official test(): reconstruction, rates and distances per level, one compilation."""
    ref, tol, cfg, model, params = setup
    x = nhwc(ref["x"])
    fn = jax.jit(lambda p, x, level, u: svi_jax.evaluation_pass(model, p, x, level, u))
    for level in levels_of(ref):
        u = detail_uniform_full(ref[f"noise_u/l{level}"], ref["y"].shape, level, model.slice_width)
        out = fn(params, x, jnp.int32(level), u)
        pre = f"test/l{level}/"
        tail = nchw(out["y_hat_samples"])[:, model.slice_width * level :]
        np.testing.assert_array_equal(tail, ref[pre + "y_hat_samples"])
        np.testing.assert_allclose(nchw(out["x_hat"]), ref[pre + "x_hat"], atol=tol.image_atol)
        r = out["rates"]
        lp = svi_jax.metrics.lpips.lpips_distance(load_lpips_params("alex"), x, out["x_hat"])
        scalars = {
            "Emse": jnp.mean((x - out["x_hat"]) ** 2),
            "Elpips": jnp.mean(lp),
            "synonym_distance": out["synonym_distance"],
            "sample_distance": out["sample_distance"],
            "bpp_y": r.bpp_y,
            "bpp_ys": r.bpp_ys,
            "bpp_z": r.bpp_z,
            "bpp_y_splits_std": r.bpp_y_splits_std,
            "bpp_y_splits_chunk": r.bpp_y_splits_chunk,
        }
        for k, v in scalars.items():
            assert_scalar(v, ref[pre + k], tol.scalar_rtol, pre + k, atol=1e-12)
    assert fn._cache_size() == 1, "levels must share one compilation"


def _train_noise(ref, level, model):
    y_shape = ref["y"].shape
    return svi_jax.TrainNoise(
        y=nhwc(ref[f"train_noise/l{level}/y"]),
        z=nhwc(ref[f"train_noise/l{level}/z"]),
        detail=detail_uniform_full(
            ref[f"train_noise/l{level}/u"], y_shape, level, model.slice_width
        ),
    )


def _dropout_masks(ref, level, num_calls):
    return [
        jnp.concatenate(
            [nhwc(ref[f"train_dropout/l{level}/c{c}/lin{k}"]) for c in range(num_calls)], axis=0
        )
        for k in range(5)
    ]


def _module_norms(grads):
    norms = {}
    for name, sub in grads.items():
        leaves = [
            v
            for path, v in jax.tree_util.tree_flatten_with_path(sub)[0]
            if "quantiles" not in jax.tree_util.keystr(path)
        ]
        norms[name] = float(jnp.sqrt(sum(jnp.sum(v * v) for v in leaves)))
    return norms


TRAIN_SCALARS = (
    "mse_syntactic",
    "lpips_syntactic",
    "Emse_loss",
    "Elpips_semantic",
    "synonym_distance",
    "sample_distance",
    "bpp_y",
    "bpp_ys",
    "bpp_z",
    "bpp_y_splits_std",
    "bpp_y_splits_chunk",
    "loss",
    "loss_syntactic",
    "loss_synonymous",
)


@pytest.mark.parametrize("mode", ["train_lpipseval", "train"])
@pytest.mark.slow
def test_train_pass_loss_and_gradients(setup, mode):
    """Training forward + backward: every scalar, the detail samples and the gradient norms.

    `train_lpipseval` is deterministic LPIPS (svi_jax's default); `train` replays the official
    LPIPS training-mode dropout from the recorded keep-masks.
    """
    ref, tol, cfg, model, params = setup
    num_samples = int(ref["meta/M"])
    lpips_params = load_lpips_params("alex")
    x = nhwc(ref["x"])

    def loss_fn(p, level, noise, masks):
        return svi_jax.svi_loss(model, p, lpips_params, x, level, noise, cfg.loss, masks)

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    for level in levels_of(ref):
        pre = f"{mode}/l{level}/"
        masks = _dropout_masks(ref, level, 1 + num_samples) if mode == "train" else None
        (loss, metrics), grads = step(
            params, jnp.int32(level), _train_noise(ref, level, model), masks
        )
        for k in TRAIN_SCALARS:
            assert_scalar(metrics[k], ref[pre + k], tol.scalar_rtol, pre + k, atol=1e-12)
        norms = _module_norms(grads)
        total = float(np.sqrt(sum(v * v for v in norms.values())))
        # masks inside autodiff: compare with the reference norm of the masked gradient
        assert_scalar(total, ref[pre + "grad_norm_ctx_masked"], tol.grad_norm_rtol, "grad_norm")
        for name, v in norms.items():
            if name == "context_model":  # official per-module norm includes masked taps
                continue
            assert_scalar(v, ref[f"{pre}grad_norm_module/{name}"], tol.module_rtol, name)
        per_param_keys = [k for k in ref.files if k.startswith(pre + "grad_norm_of/")]
        if per_param_keys:
            grad_norm = float(ref[pre + "grad_norm"])
            official = svi_jax.export_official_state_dict(grads)
            for key in per_param_keys:
                name = key.split("grad_norm_of/")[1]
                if name == "context_model.layer.weight" or name.endswith("quantiles"):
                    continue  # masked taps / aux-optimised quantiles: not comparable
                ours = float(np.linalg.norm(official[name]))
                assert_scalar(
                    ours, ref[key], tol.param_rtol, name, atol=tol.param_atol_of_norm * grad_norm
                )
        if f"{pre}y_hat_samples" in ref.files:
            tail = nchw(metrics_samples(model, params, x, level, ref, num_samples))
            np.testing.assert_array_equal(tail, ref[pre + "y_hat_samples"])
    assert step._cache_size() == 1, "levels must share one compilation"


def metrics_samples(model, params, x, level, ref, num_samples):
    out = jax.jit(lambda p, lv, n: svi_jax.train_forward(model, p, x, lv, n, reencode=False))(
        params, jnp.int32(level), _train_noise(ref, level, model)
    )
    return out["y_hat_samples"][..., model.slice_width * level :]


def _readme_codec_total(readme: str) -> tuple[int, int] | None:
    m = re.search(r"\*\*codec total\*\*[^|]*\|\s*\*\*([\d,]+)\*\*\s*\|\s*\*\*([\d,]+)\*\*", readme)
    if not m:
        return None
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def _count(model):
    shapes = jax.eval_shape(lambda: svi_jax.init_params(model, jax.random.PRNGKey(0)))
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))


def test_parameter_counts_match_official(reference_set):
    _, readme = reference_set
    counts = _readme_codec_total(readme)
    if counts is None:
        pytest.skip("reference README has no codec parameter count table")
    small, full = counts
    assert _count(svi_jax.build_model(tiny.get_config().model)) == small
    assert _count(svi_jax.build_model(paper.get_config().model)) == full
