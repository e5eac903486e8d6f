"""`train_and_evaluate(config, workdir)`: the training loop shared by all three phases."""

from __future__ import annotations

import logging
import math
import pathlib

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from svi_jax.data import loader as data_loader
from svi_jax.metrics.lpips import load_lpips_params
from svi_jax.nn.model import build_model
from svi_jax.tracing import trace_count
from svi_jax.training import preflight, steps
from svi_jax.training.checkpointing import Checkpointer, abstract_like
from svi_jax.training.logging_utils import MetricWriter, save_image_grid
from svi_jax.training.validation import Validator, load_validation_images
from svi_jax.weights.export import load_exported_model, save_exported_model

logger = logging.getLogger(__name__)
SUMMARY_LEVELS = (1, 8, 16)  # levels of the one-line summary


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or Inf; the last good checkpoint is left intact."""


def data_folders(config, workdir: pathlib.Path) -> tuple[str | None, str]:
    """(train folder or None for TFDS, validation folder); default: scikit-image photos."""
    d = config.data
    if d.train or d.tfds_name:
        if not d.val:
            raise data_loader.DataError("config.data.val (a held-out image folder) is required")
        return (d.train or None), d.val
    train, val = data_loader.write_skimage_split(workdir / "data")
    return str(train), str(val)


def make_loader(config, train_path: str | None, local_batch: int):
    d = config.data
    common = dict(batch_size=local_batch, crop_size=d.crop_size, seed=int(config.seed))
    if train_path is None:
        return data_loader.make_tfds_train_loader(
            d.tfds_name, split=d.tfds_split, data_dir=d.tfds_data_dir or None, **common
        )
    return data_loader.make_train_loader(train_path, num_workers=d.num_workers, **common)


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def _summary(val: dict) -> str:
    lv = val["levels"]
    bpp = "/".join(f"{lv[i]['bpp']:.3f}" for i in SUMMARY_LEVELS)
    ps = "/".join(f"{lv[i]['psnr']:.2f}" for i in SUMMARY_LEVELS)
    return f"val loss {val['loss']:.4g} | bpp@1/8/16 {bpp} | PSNR@1/8/16 {ps} dB"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains `config.phase` in `workdir`, resuming from its latest checkpoint if any.

    Returns {"step", "summary", "val", "checkpoints", "logs", "export"}.
    """
    workdir = pathlib.Path(workdir).resolve()
    preflight.check_run(config, workdir)  # every input, before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    t = config.train
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    global_batch = int(config.data.batch_size)
    if global_batch % jax.device_count():
        raise ValueError(f"batch_size {global_batch} must divide over {jax.device_count()} devices")
    local_batch = global_batch // jax.process_count()

    model = build_model(config.model)
    lpips_params = load_lpips_params("alex")
    train_path, val_path = data_folders(config, workdir)
    loader = make_loader(config, train_path, local_batch)
    validator = Validator(
        config, model, lpips_params, load_validation_images(val_path, config.data.val_crop)
    )
    ckpt = Checkpointer(workdir, config)
    rng = jax.random.PRNGKey(int(config.seed))

    # State: resume this phase, else start from the previous phase's export, else from scratch.
    init = lambda params=None: steps.init_state(config, model, rng, params)
    abstract = abstract_like(jax.eval_shape(init), replicated)
    resumed = ckpt.restore_newest_intact(abstract, _grain_iterator(loader))
    if resumed is not None:
        state, latest = resumed
        logger.info("resumed from %s at step %d", ckpt.directory, latest)
    elif t.init_from:
        _, params, digest = load_exported_model(t.init_from)
        state = jax.jit(init, out_shardings=replicated)(params)
        logger.info("%s phase starts from %s (params %s)", config.phase, t.init_from, digest[:12])
    else:
        state = jax.jit(init, out_shardings=replicated)()
    writer = MetricWriter(workdir, enabled=primary)  # after the workdir's checkpoints proved usable

    train_step = jax.jit(
        steps.make_step_fn(config, model, lpips_params),
        in_shardings=(replicated, batch_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )

    def export(step: int, **extra):
        if primary:
            params = jax.device_get(state["params"])
            save_exported_model(
                workdir / "export", config, params, step=step, phase=config.phase, **extra
            )

    def every(n: int, step: int) -> bool:
        return (n > 0 and step % n == 0) or step == t.num_steps

    start = int(jax.device_get(state["step"]))
    val, metrics, step = None, {"loss": float("nan")}, start
    bar = tqdm(
        range(start, t.num_steps),
        initial=start,
        total=t.num_steps,
        disable=not primary,
        desc=config.phase,
        unit="step",
    )
    try:
        for _ in bar:
            batch = jax.make_array_from_process_local_data(batch_sharding, next(loader))
            state, metrics = train_step(state, batch)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            step = int(jax.device_get(state["step"]))
            if not math.isfinite(metrics["loss"]):
                last = ckpt.latest_step()
                raise TrainingDivergedError(
                    f"loss is {metrics['loss']} at step {step - 1} (level "
                    f"{int(metrics['level'])}); stopped. Last good checkpoint: "
                    f"{'none' if last is None else ckpt.directory / str(last)}"
                )
            psnr_key = "psnr_level" if "psnr_level" in metrics else "psnr_syntactic"
            bar.set_postfix(
                loss=f"{metrics['loss']:.4g}",
                bpp=f"{metrics['bpp']:.3f}",
                psnr=f"{metrics[psnr_key]:.2f}",
                level=int(metrics["level"]),
            )
            if every(t.log_every, step):
                writer.write(step, "train", metrics, level=int(metrics["level"]))
            validate = t.eval_every >= 0 and every(t.eval_every, step)
            if validate:
                val = validator.run(state["params"])
                for level, row in val["levels"].items():
                    writer.write(step, "val", row, level=level)
                writer.write(step, "val", {"loss": val["loss"]})
                logger.info("step %d: %s", step, _summary(val))
            if validate or every(t.checkpoint_every, step):  # validated: a "best" candidate
                loss = val["loss"] if validate else None
                ckpt.save(step, state, _grain_iterator(loader), val_loss=loss)
                if validate and ckpt.best_step() == step:
                    export(step, val_loss=val["loss"], best=True)
            if t.image_every > 0 and (step % t.image_every == 0 or step == t.num_steps) and primary:
                original, recons = validator.reconstructions(state["params"], t.image_levels)
                save_image_grid(workdir / "images" / f"step_{step:07d}.png", original, recons)
        step = int(jax.device_get(state["step"]))
        if val is None and t.eval_every >= 0:  # e.g. resumed after the last step
            val = validator.run(state["params"])
        export(step, val_loss=val["loss"] if val else None, final=True)
    finally:
        bar.close()
        writer.close()
        ckpt.close()
        loader.close()
    return {
        "step": step,
        "summary": _summary(val) if val else f"train loss {metrics['loss']:.4g} (no validation)",
        "val": val,
        "checkpoints": str(ckpt.directory),
        "logs": str(writer.jsonl_path),
        "tensorboard": str(writer.tb_dir),
        "export": str(workdir / "export"),
        "trace_counts": {
            p: n for p in steps.PHASES if (n := trace_count(steps.step_trace_name(p)))
        },
    }


def _grain_iterator(loader):
    """The grain iterator behind `loader` (saved by grain's orbax handler), or None."""
    return getattr(loader, "iterator", None)
