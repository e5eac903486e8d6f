"""Rate–distortion–perception evaluation of one model over its levels, with real bitstreams.

Per image: the codec encodes once (`Codec.compress`, every level in one .sic file); the real
rate of level l is the size of `truncate(data, l)`; the file is entropy-decoded once (the
prefix property, MODEL.md §5: the first l slices of the full decode ARE the level-l decode), then
all (level, seed) syntheses run in fixed-size batches. The estimated rate (−log2 P of round(y)
and ẑ, as the official `test`) comes from one jitted pass. Metrics are on the original H×W,
8-bit images; the metric networks are one jitted function (compiled once per image shape).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from svi_jax.codec import Codec, banded, detail_uniform, truncate
from svi_jax.codec import format as fmt
from svi_jax.evaluation.sources import Dataset, EvalInputError, ModelSource
from svi_jax.forward import compose_level_latent, encode_latents, pad_to_multiple, sample_details
from svi_jax.metrics import (
    DISTS_MIN_SIZE,
    dists_features,
    dists_from_features,
    fid_from_features,
    kid_from_features,
    load_dists_params,
    ms_ssim,
    ms_ssim_min_size,
    patch_features,
    psnr,
)
from svi_jax.metrics.lpips import load_lpips_params, lpips_features, lpips_from_features
from svi_jax.nn.entropy_models import bits, gaussian_likelihood
from svi_jax.nn.model import DOWNSCALE_Z, ProgressiveSIC

log = logging.getLogger(__name__)

# Per-image metrics, in report order ("ms_ssim_db" = −10·log10(1 − MS-SSIM)).
IMAGE_METRICS = ("psnr", "ms_ssim", "ms_ssim_db", "lpips_alex", "lpips_vgg", "dists")
# Smallest side (px) each network metric gives a value for (measured: LPIPS-alex is NaN
# below 31 px, LPIPS-vgg below 16 px; DISTS refuses below DISTS_MIN_SIZE).
NETWORK_MIN_SIZE = {"lpips_alex": 31, "lpips_vgg": 16, "dists": DISTS_MIN_SIZE}
MS_SSIM_SCALES, MS_SSIM_WINDOW, MS_SSIM_SIGMA = 5, 11, 1.5


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    levels: tuple[int, ...] | None = None  # None: every level of the model
    samples: int = 1  # M detail samples (seeds seed..seed+M-1) per level
    seed: int = 0  # first detail seed; also the seed written in the bitstream header
    synthesis_batch: int | None = None  # (level, seed) syntheses per g_s call; None: auto
    metric_batch: int = 4  # reconstructions per metric-network call
    grid_images: int = 3  # images shown in the reconstruction grid
    grid_seeds: int = 2  # seeds per image in the grid (extra syntheses if > samples)
    fid_patch_sizes: tuple[int, ...] = (299, 256)  # MODEL.md §6 and HiFiC's FID/256
    kid_subsets: int = 100
    kid_subset_size: int = 500


@dataclasses.dataclass
class EvalOutput:
    results: dict  # JSON-ready (see svi_jax.evaluation.results)
    grid: list  # [(name, original uint8, {(level, seed): uint8 reconstruction})]


# --- jitted pieces ---------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames="model")
def _estimated_bits(model: ProgressiveSIC, params, x):
    """(−log2 P(ẑ), −log2 P(ŷ) per slice (S,)) of one padded image (1, H, W, 3)."""
    lat = encode_latents(model, params, x)
    y_bits = bits(gaussian_likelihood(lat.y_hat, lat.means, lat.scales))
    z_lik = model.apply({"params": params}, lat.z_hat, method=ProgressiveSIC.z_likelihood)
    per_slice = y_bits.reshape(-1, model.num_slices, model.slice_width).sum(axis=(0, 2))
    return jnp.sum(bits(z_lik)), per_slice


@functools.partial(jax.jit, static_argnames="model")
def _synthesize(model: ProgressiveSIC, params, y_hat, hyper, levels, uniforms):
    """Batched decoder output: ŷ (h, w, C) at `levels` (B,) with detail noise `uniforms`
    (B, h, w, C) -> uint8 (B, H, W, 3); the same arithmetic as `Codec.decompress`."""
    c = model.latent_channels
    details = sample_details(jnp.broadcast_to(hyper[..., c:], uniforms.shape), uniforms)
    compose = lambda d, lvl: compose_level_latent(y_hat, d, lvl, model.slice_width)
    latent = jax.vmap(compose)(details, levels)
    x = model.apply({"params": params}, latent, method=ProgressiveSIC.synthesis)
    return jnp.round(x * 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames="networks")
def _reference_features(nets, reference, networks: frozenset = frozenset(NETWORK_MIN_SIZE)):
    """LPIPS and DISTS features of the original (uint8 (1, H, W, 3)): computed once per image,
    compared with every level's reconstruction. `networks`: the metrics to prepare."""
    ref = reference.astype(jnp.float32) / 255.0
    out = {}
    for net in ("alex", "vgg"):
        if f"lpips_{net}" in networks:
            out[f"lpips_{net}"] = lpips_features(nets[f"lpips_{net}"], ref, net)
    if "dists" in networks:
        out["dists"] = dists_features(nets["dists"], ref)
    return out


@functools.partial(jax.jit, static_argnames=("with_ms_ssim", "networks"))
def _image_metrics(
    nets,
    reference,
    reference_features,
    reconstructions,
    with_ms_ssim: bool,
    networks: frozenset = frozenset(NETWORK_MIN_SIZE),
):
    """Per-reconstruction metrics; reference uint8 (1, H, W, 3), reconstructions (B, H, W, 3).
    Only the network metrics in `networks` are computed (the image is too small for others)."""
    rec = reconstructions.astype(jnp.float32) / 255.0
    ref = jnp.broadcast_to(reference.astype(jnp.float32) / 255.0, rec.shape)
    feats = reference_features

    def lpips(net):
        rec_feats = lpips_features(nets[f"lpips_{net}"], rec, net)
        return lpips_from_features(nets[f"lpips_{net}"], feats[f"lpips_{net}"], rec_feats)

    out = {"psnr": psnr(ref, rec, data_range=1.0)}
    for net in ("alex", "vgg"):
        if f"lpips_{net}" in networks:
            out[f"lpips_{net}"] = lpips(net)
    if "dists" in networks:
        out["dists"] = dists_from_features(
            nets["dists"], feats["dists"], dists_features(nets["dists"], rec)
        )
    if with_ms_ssim:
        out["ms_ssim"] = ms_ssim(ref, rec, 1.0, MS_SSIM_WINDOW, MS_SSIM_SIGMA)
    return out


def load_metric_networks() -> dict:
    """LPIPS-alex, LPIPS-vgg and DISTS weights (all shipped with installed packages)."""
    return {
        "lpips_alex": load_lpips_params("alex"),
        "lpips_vgg": load_lpips_params("vgg"),
        "dists": load_dists_params(),
    }


def default_synthesis_batch() -> int:
    """16 (all levels in one g_s call) on accelerators; 1 on CPU, where XLA's batched Swin
    synthesis scales super-linearly (tiny config, 128x128: batch 16 takes 2.5 s, 16 calls of
    batch 1 take 0.8 s; see benchmarks/eval.py)."""
    return 1 if jax.default_backend() == "cpu" else 16


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, −10·log10(1 − MS-SSIM); +inf for a perfect score."""
    if not math.isfinite(value):
        return float("nan")
    return float("inf") if value >= 1.0 else -10.0 * math.log10(1.0 - value)


def _chunks(items: list, size: int):
    """Fixed-size chunks (the last padded by repeating its final item) and the real counts."""
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        yield chunk + [chunk[-1]] * (size - len(chunk)), len(chunk)


# --- one image -------------------------------------------------------------------------------
class _ImageEvaluator:
    def __init__(self, codec: Codec, settings: EvalSettings, levels: Sequence[int], nets: dict):
        self.codec, self.settings, self.levels, self.nets = codec, settings, list(levels), nets
        self.synthesis_batch = settings.synthesis_batch or default_synthesis_batch()

    def estimated_bpp(self, image: np.ndarray) -> list[float]:
        x = jnp.asarray(image, jnp.float32)[None] / 255.0
        x, (h, w) = pad_to_multiple(x, DOWNSCALE_Z)
        z_bits, per_slice = _estimated_bits(self.codec.model, self.codec.params, x)
        cumulative = float(z_bits) + np.cumsum(np.asarray(per_slice, np.float64))
        return [float(cumulative[level - 1]) / (h * w) for level in self.levels]

    def synthesize(self, y_buf, hyper, pairs, uniforms) -> np.ndarray:
        """uint8 (len(pairs), H, W, 3) for (level, seed index) pairs (padded size)."""
        out = []
        y_hat = jnp.asarray(y_buf)
        for chunk, n in _chunks(pairs, self.synthesis_batch):
            levels = jnp.asarray([lvl for lvl, _ in chunk], jnp.int32)
            noise = uniforms[jnp.asarray([m for _, m in chunk])]
            images = banded.synthesize_levels(  # tiles when the batch is over the memory budget
                self.codec.model, self.codec.params, y_hat, hyper, levels, noise, _synthesize
            )
            out.append(np.asarray(images)[:n])
        return np.concatenate(out)

    def metrics(self, image: np.ndarray, recs: np.ndarray, on_done: Callable[[int], None]):
        """{metric: (len(recs),) float64}; `on_done(n)` after each chunk (progress)."""
        h, w = image.shape[:2]
        with_ms = min(h, w) >= ms_ssim_min_size(MS_SSIM_SCALES, MS_SSIM_WINDOW)
        networks = frozenset(m for m, size in NETWORK_MIN_SIZE.items() if min(h, w) >= size)
        values: dict[str, list] = {}
        ref = jnp.asarray(image)[None]
        ref_feats = _reference_features(self.nets, ref, networks)
        for chunk, n in _chunks(list(recs), self.settings.metric_batch):
            batch = jnp.asarray(np.stack(chunk))
            out = _image_metrics(self.nets, ref, ref_feats, batch, with_ms, networks)
            for key, v in out.items():
                values.setdefault(key, []).append(np.asarray(v, np.float64)[:n])
            on_done(n)
        result = {k: np.concatenate(v) for k, v in values.items()}
        for metric in ("ms_ssim", *NETWORK_MIN_SIZE):  # too small for it: NaN, said per image
            result.setdefault(metric, np.full(len(recs), np.nan))
        result["ms_ssim_db"] = np.array([ms_ssim_db(v) for v in result["ms_ssim"]])
        return result


def _sample_spread(values: np.ndarray) -> dict:
    """Spread of one metric over the M samples of one (image, level): the synset's spread."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return {"std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "std": float(np.std(finite, ddof=1)),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def check_settings(settings: EvalSettings, num_levels: int, prefix: str = "--") -> list[int]:
    """The sorted levels to evaluate (None: all `num_levels`); raises EvalInputError naming
    the setting, `prefix` + "levels" / "samples" ("--": eval.py's flags; `evaluate` passes
    "" for the library's EvalSettings fields), for levels outside 1..num_levels, an empty
    level list or samples < 1."""
    every = settings.levels is None  # None: all levels; an empty tuple is a mistake, not "all"
    levels = sorted(set(range(1, num_levels + 1) if every else settings.levels))
    if not levels or levels[0] < 1 or levels[-1] > num_levels:
        raise EvalInputError(
            f"{prefix}levels must be in 1..{num_levels}, got {list(settings.levels or [])}"
        )
    if settings.samples < 1:
        raise EvalInputError(f"{prefix}samples must be >= 1, got {settings.samples}")
    return levels


def evaluate(
    source: ModelSource,
    dataset: Dataset,
    settings: EvalSettings | None = None,
    feature_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
    nets: dict | None = None,
) -> EvalOutput:
    """Runs the evaluation; returns the JSON-ready results and the grid images."""
    settings = settings or EvalSettings()
    codec = Codec(source.params, source.config, source.params_hash)
    levels = check_settings(settings, codec.num_slices, prefix="")  # library wording
    if len(dataset) == 0:
        raise EvalInputError(f"no images in {dataset.source}")
    plan = metric_plan(dataset)  # per image, before any model work
    nets = nets if nets is not None else load_metric_networks()
    worker = _ImageEvaluator(codec, settings, levels, nets)
    m_samples, top = settings.samples, levels[-1]
    notes: list[str] = []
    rows: list[dict] = []
    grid: list = []
    fid_real: dict[int, list] = {p: [] for p in settings.fid_patch_sizes}
    fid_fake: dict[tuple[int, int], list] = {}
    bar = tqdm(total=len(dataset) * len(levels) * m_samples, disable=not progress, unit="rec")
    for index, (name, image) in enumerate(dataset):
        h, w = image.shape[:2]
        bar.set_description(f"{name} ({index + 1}/{len(dataset)})")
        t0 = time.perf_counter()
        data = codec.compress(image, level=top, seed=settings.seed)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, _, y_buf, hyper, _ = codec.decode_symbols(data)
        entropy_decode_s = time.perf_counter() - t0
        seeds = max(m_samples, settings.grid_seeds if index < settings.grid_images else 0)
        uniforms = jnp.stack([detail_uniform(settings.seed + m, y_buf.shape) for m in range(seeds)])
        pairs = [(lvl, m) for lvl in levels for m in range(m_samples)]
        t0 = time.perf_counter()
        recs = worker.synthesize(y_buf, hyper, pairs, uniforms)[:, :h, :w]
        synthesis_s = time.perf_counter() - t0
        values = worker.metrics(image, recs, bar.update)
        if min(h, w) < ms_ssim_min_size(MS_SSIM_SCALES, MS_SSIM_WINDOW) and not any(
            "MS-SSIM" in n for n in notes
        ):
            notes.append(
                f"MS-SSIM is NaN for images with a side below "
                f"{ms_ssim_min_size(MS_SSIM_SCALES, MS_SSIM_WINDOW)} px (5 scales, window 11)"
            )
        estimated = worker.estimated_bpp(image)
        level_rows = []
        for k, level in enumerate(levels):
            nbytes = len(truncate(data, level))
            payload = nbytes - fmt.HEADER_SIZE - fmt.SEGMENT_OVERHEAD * (level + 1)
            sl = slice(k * m_samples, (k + 1) * m_samples)
            row = {
                "level": level,
                "bytes": nbytes,
                "bpp": 8.0 * nbytes / (h * w),
                "bpp_payload": 8.0 * payload / (h * w),
                "bpp_est": estimated[k],
            }
            for metric in IMAGE_METRICS:
                finite = values[metric][sl][np.isfinite(values[metric][sl])]
                row[metric] = float(finite.mean()) if finite.size else float("nan")
            row["samples"] = [
                {
                    "seed": settings.seed + m,
                    **{k2: float(values[k2][sl][m]) for k2 in IMAGE_METRICS},
                }
                for m in range(m_samples)
            ]
            if m_samples > 1:
                row["spread"] = {k2: _sample_spread(values[k2][sl]) for k2 in IMAGE_METRICS}
            level_rows.append(row)
        rows.append(
            {
                "name": name,
                "height": h,
                "width": w,
                "bytes": len(data),
                "encode_s": encode_s,
                "decode_s": entropy_decode_s + synthesis_s,
                "entropy_decode_s": entropy_decode_s,
                "synthesis_s": synthesis_s,
                "levels": level_rows,
                **({"unavailable": plan[index]} if plan[index] else {}),
            }
        )
        if feature_fn is not None:
            firsts = [recs[k * m_samples] for k in range(len(levels))]  # seed 0 of each level
            for p in settings.fid_patch_sizes:
                _add_features(fid_real, fid_fake, feature_fn, p, image, firsts, levels)
        if index < settings.grid_images:
            extra = [(lvl, m) for lvl in levels for m in range(m_samples, seeds)]
            more = worker.synthesize(y_buf, hyper, extra, uniforms)[:, :h, :w] if extra else []
            shown = {(lvl, settings.seed + m): recs[i] for i, (lvl, m) in enumerate(pairs)}
            shown.update({(lvl, settings.seed + m): more[i] for i, (lvl, m) in enumerate(extra)})
            grid.append((name, image, shown))
    bar.close()
    partial = [(n, p) for n, p in zip(dataset.names, plan, strict=True) if p]
    if partial:
        notes.append(
            f"{len(partial)} image(s) too small for some metrics (NaN, listed per image under "
            f"'unavailable'), e.g. {partial[0][0]}: {', '.join(partial[0][1])}"
        )
    fid = _fid_kid(settings, levels, fid_real, fid_fake, feature_fn, notes)
    return EvalOutput(
        results={
            "levels_evaluated": levels,
            "samples": m_samples,
            "seed": settings.seed,
            "images": rows,
            "fid_kid": fid,
            "fid_network": getattr(feature_fn, "description", None) if feature_fn else None,
            "notes": notes,
        },
        grid=grid,
    )


def metric_plan(dataset: Dataset) -> list[dict[str, str]]:
    """Per image, {metric: why it cannot be computed} from the image size alone (rates and
    PSNR always can; any size >= 1 px is coded, padded as the codec pads). Logged up front."""
    ms_min = ms_ssim_min_size(MS_SSIM_SCALES, MS_SSIM_WINDOW)
    needs = {"ms_ssim": ms_min, "ms_ssim_db": ms_min, **NETWORK_MIN_SIZE}
    plan = []
    for name, (h, w) in zip(dataset.names, dataset.image_sizes(), strict=True):
        missing = {m: f"needs {size} px sides" for m, size in needs.items() if min(h, w) < size}
        if missing:
            log.warning(
                "%s (%dx%d px (W x H)): too small for %s; evaluated without them",
                name,
                w,
                h,
                ", ".join(missing),
            )
        plan.append(missing)
    return plan


def _add_features(real, fake, feature_fn, patch_size, image, recs, levels) -> None:
    """Patch features of one image and its reconstructions, in shared fixed-size batches
    (so a jitted feature network compiles for one batch shape, not one per image)."""
    try:
        feats = patch_features([image, *recs], feature_fn, patch_size)
    except ValueError:  # image smaller than a patch: contributes nothing
        return
    per_image = feats.reshape(len(recs) + 1, -1, feats.shape[-1])
    real[patch_size].append(per_image[0])
    for level, level_feats in zip(levels, per_image[1:], strict=True):
        fake.setdefault((patch_size, level), []).append(level_feats)


def _fid_kid(settings, levels, real, fake, feature_fn, notes) -> dict:
    """{"<p>": {"<level>": {fid, kid_mean, kid_std, num_patches}}} or {} with a note."""
    if feature_fn is None:
        notes.append("FID/KID skipped: no Inception feature network given (--inception)")
        return {}
    out: dict = {}
    for p in settings.fid_patch_sizes:
        feats = np.concatenate(real[p]) if real[p] else np.zeros((0, 1))
        if len(feats) < 2:
            notes.append(f"FID/KID at {p} px skipped: fewer than 2 patches of {p}x{p}")
            continue
        out[str(p)] = {}
        for level in levels:
            rec = np.concatenate(fake[p, level])
            kid_mean, kid_std, _ = kid_from_features(
                feats, rec, settings.kid_subsets, settings.kid_subset_size
            )
            out[str(p)][str(level)] = {
                "fid": fid_from_features(feats, rec),
                "kid_mean": kid_mean,
                "kid_std": kid_std,
                "num_patches": len(feats),
                "feature_dim": int(feats.shape[1]),
                "too_few_patches": len(feats) <= feats.shape[1],
            }
        if len(feats) <= feats.shape[1]:
            # FID's covariance of D-dim features has rank < D from N <= D samples: the score
            # is dominated by estimation error, not by the images (HiFiC and MS-ILLM use
            # many thousands of patches for D = 2048).
            line = (
                f"FID/KID at {p} px from only {len(feats)} patches for {feats.shape[1]}-dim "
                "features (needs more than the feature dimension): not comparable; "
                "evaluate on more or larger images"
            )
            notes.append(line)
            log.warning(line)
    return out
