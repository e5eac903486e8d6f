"""`train_and_evaluate(config, workdir)`: the training loop shared by all three phases.

`config.phase` names one phase ("warming" | "main" | "gan") or a comma-separated sequence
(e.g. "warming,main", the official order): each phase then runs in `workdir/<phase>`, starts
from the previous phase's export, and the last phase's export is copied to `workdir/export`.
`config.phase_overrides.<phase>` holds fields (same layout as the config) applied only while
that phase runs, so `--config.phase_overrides.warming.train.num_steps=300` tunes one phase.

The loop keeps the step's metrics on the device and fetches them only at host steps (log,
checkpoint, validation, image and the last step): asynchronous dispatch stays ahead of the
device between them. NaN/Inf is checked on every fetched step, so a divergence is reported
with its exact step even when it is noticed a few steps later.
"""

from __future__ import annotations

import logging
import math
import pathlib
import time

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
from svi_jax.training.phases import phase_config, phase_sequence, step_plan
from svi_jax.training.validation import Validator, load_validation_images
from svi_jax.weights.export import load_exported_model, save_exported_model

logger = logging.getLogger(__name__)
SUMMARY_LEVELS = (1, 8, 16)  # levels of the one-line summary
CHECKED_METRICS = ("loss", "grad_norm")  # fetched steps with a non-finite value stop training
MAX_IN_FLIGHT = 2  # steps dispatched ahead of the last finished one (waits, never copies)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or Inf; the last good checkpoint is left intact."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains the phase(s) of `config.phase` in `workdir`, resuming each from its latest
    checkpoint if any.

    Returns {"step", "summary", "val", "checkpoints", "logs", "tensorboard", "export",
    "trace_counts"} of the last phase (plus "phases": every phase's result, when several).
    """
    phases = phase_sequence(config.phase)
    workdir = pathlib.Path(workdir).resolve()
    for phase in phases:  # every phase's flags before the first one trains (or writes)
        preflight.check_flags(phase_config(config, phase))
    logger.info("steps: %s", step_plan(config, phases))
    if len(phases) == 1:
        return train_phase(phase_config(config, phases[0]), workdir)
    results, previous, upstream = {}, None, None
    for i, phase in enumerate(phases):
        cfg = phase_config(config, phase)
        if previous is not None and not config.phase_overrides.get(phase, {}).get("train", {}).get(
            "init_from"
        ):
            cfg.train.init_from = previous
        label = f"{phase} {i + 1}/{len(phases)}"
        results[phase] = train_phase(cfg, workdir / phase, label=label, upstream=upstream)
        previous = results[phase]["export"]
        start, end = results[phase]["start"], results[phase]["step"]
        upstream = (phase, start, end) if end > start else None  # trained in this run
    if jax.process_index() == 0:  # the final model where eval.py and the codec look for it
        final_config, params, _ = load_exported_model(previous)
        save_exported_model(
            workdir / "export",
            final_config,
            params,
            step=results[phases[-1]]["step"],
            phase=phases[-1],
            phases=list(phases),
            source=str(pathlib.Path(previous).relative_to(workdir)),
        )
    return dict(results[phases[-1]], export=str(workdir / "export"), phases=results)


def data_folders(config, workdir: pathlib.Path) -> tuple[str | None, str]:
    """(train folder or None for TFDS, validation folder); default: scikit-image photos."""
    data_cfg = config.data
    if data_cfg.train or data_cfg.tfds_name:
        if not data_cfg.val:
            raise data_loader.DataError("config.data.val (a held-out image folder) is required")
        return (data_cfg.train or None), data_cfg.val
    train, val = data_loader.write_skimage_split(workdir / "data")
    preflight.check_training_images(str(train), int(data_cfg.crop_size))  # notes small photos
    return str(train), str(val)


def make_loader(config, train_path: str | None, local_batch: int):
    data_cfg = config.data
    common = dict(batch_size=local_batch, crop_size=data_cfg.crop_size, seed=int(config.seed))
    if train_path is None:
        return data_loader.make_tfds_train_loader(
            data_cfg.tfds_name,
            split=data_cfg.tfds_split,
            data_dir=data_cfg.tfds_data_dir or None,
            **common,
        )
    return data_loader.make_train_loader(train_path, num_workers=data_cfg.num_workers, **common)


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def _summary(val: dict) -> str:
    lv = val["levels"]
    bpp = "/".join(f"{lv[i]['bpp']:.3f}" for i in SUMMARY_LEVELS)
    ps = "/".join(f"{lv[i]['psnr']:.2f}" for i in SUMMARY_LEVELS)
    return f"val loss {val['loss']:.4g} | bpp@1/8/16 {bpp} | PSNR@1/8/16 {ps} dB"


def check_finite(fetched: list[tuple[int, dict]], checkpoint_dir, last_checkpoint) -> None:
    """Raises TrainingDivergedError naming the first step (of the fetched range) whose loss
    or gradient norm is NaN/Inf; `fetched` is [(step, host metrics)] in step order."""
    for step, metrics in fetched:
        bad = {k: metrics[k] for k in CHECKED_METRICS if k in metrics}
        bad = {k: v for k, v in bad.items() if not math.isfinite(float(v))}
        if bad:
            first, last = fetched[0][0], fetched[-1][0]
            what = ", ".join(f"{k} is {float(v)}" for k, v in bad.items())
            where = "none" if last_checkpoint is None else checkpoint_dir / str(last_checkpoint)
            raise TrainingDivergedError(
                f"{what} at step {step} (level {int(metrics['level'])}; first non-finite "
                f"step of steps {first}-{last}, checked at step {last}); stopped. "
                f"Last good checkpoint: {where}"
            )


class _Throughput:
    """Steps/s and images/s between host syncs (the first interval holds the compilation)."""

    def __init__(self, step: int, batch: int):
        self.step, self.time, self.batch = step, time.perf_counter(), batch

    def __call__(self, step: int) -> dict:
        now = time.perf_counter()
        rate = (step - self.step) / max(now - self.time, 1e-9)
        self.step, self.time = step, now
        return {"steps_per_s": rate, "images_per_s": rate * self.batch}


def train_phase(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    label: str | None = None,
    upstream: tuple[str, int, int] | None = None,
) -> dict:
    """Trains the single phase `config.phase` in `workdir` (resuming it if checkpointed).

    `upstream`: (previous phase, first step, last step) when the previous phase of the
    sequence trained in this run; a phase that resumes its own checkpoint does not use
    those steps, and says so.

    Returns {"step", "start" (the step it resumed at, 0 when fresh), "summary", "val",
    "checkpoints", "logs", "tensorboard", "export", "trace_counts"}.
    """
    workdir = pathlib.Path(workdir).resolve()
    preflight.check_run(config, workdir)  # every input, before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    train_cfg = config.train
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    global_batch = int(config.data.batch_size)  # a multiple of the devices (preflight)
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
    resumed = ckpt.restore_newest_intact(
        abstract, _grain_iterator(loader), lambda step: _seek(loader, step)
    )
    latest = None
    if resumed is not None:
        state, latest = resumed
        logger.info("resumed from %s at step %d", ckpt.directory, latest)
        if upstream is not None:
            before, first, last = upstream
            done = "is already complete" if latest >= train_cfg.num_steps else "continues"
            logger.warning(
                "%s resumes its own checkpoint (step %d) and %s: it does not use the %s steps "
                "%d-%d trained in this run (its start was the earlier %s export). To retrain "
                "%s from the new %s export, move %s aside (or delete it) and run again",
                config.phase,
                latest,
                done,
                before,
                first + 1,
                last,
                before,
                config.phase,
                before,
                workdir,
            )
    elif train_cfg.init_from:
        _, params, digest = load_exported_model(train_cfg.init_from)
        state = jax.jit(init, out_shardings=replicated)(params)
        logger.info(
            "%s phase starts from %s (params %s)", config.phase, train_cfg.init_from, digest[:12]
        )
    else:  # parameters drawn eagerly (svi_jax/nn/initializers.py), the rest in one jit; passed
        # as host arrays like an export's, the same on every process of a multi-host run
        params = jax.device_get(steps.initial_params(config, model, rng))
        state = jax.jit(init, out_shardings=replicated)(params)
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
        return (n > 0 and step % n == 0) or step == train_cfg.num_steps

    def host_step(step: int) -> bool:  # steps whose work needs the metrics on the host
        return (
            every(train_cfg.log_every, step)
            or every(train_cfg.checkpoint_every, step)
            or (train_cfg.eval_every >= 0 and every(train_cfg.eval_every, step))
            or (train_cfg.image_every > 0 and every(train_cfg.image_every, step))
        )

    start = latest if latest is not None else 0  # the step counter stays on the device
    val, metrics, step = None, {"loss": float("nan")}, start
    pending: list[tuple[int, dict]] = []  # (step, on-device metrics) since the last fetch
    throughput = _Throughput(start, global_batch)
    profile = _Profile(workdir / "profile", int(train_cfg.get("profile_steps", 0)), start)
    bar = tqdm(
        range(start, train_cfg.num_steps),
        initial=start,
        total=train_cfg.num_steps,
        disable=not primary,
        desc=label or config.phase,
        unit="step",
    )
    try:
        for _ in bar:
            batch = jax.make_array_from_process_local_data(batch_sharding, next(loader))
            state, step_metrics = train_step(state, batch)
            step += 1
            pending.append((step, step_metrics))
            if len(pending) > MAX_IN_FLIGHT:  # bounds queued batches; keeps the bar honest
                jax.block_until_ready(pending[-1 - MAX_IN_FLIGHT][1]["loss"])
            profile.after_step(step, state)
            if not host_step(step):
                continue
            fetched, pending = jax.device_get(pending), []
            check_finite(fetched, ckpt.directory, ckpt.latest_step())
            metrics = {k: float(v) for k, v in fetched[-1][1].items()}
            metrics.update(throughput(step))
            psnr_key = "psnr_level" if "psnr_level" in metrics else "psnr_syntactic"
            bar.set_postfix(
                loss=f"{metrics['loss']:.4g}",
                bpp=f"{metrics['bpp']:.3f}",
                psnr=f"{metrics[psnr_key]:.2f}",
                level=int(metrics["level"]),
                it_s=f"{metrics['steps_per_s']:.2f}",
            )
            if every(train_cfg.log_every, step):
                writer.write(step, "train", metrics, level=int(metrics["level"]))
            validate = train_cfg.eval_every >= 0 and every(train_cfg.eval_every, step)
            if validate:
                val = validator.run(state["params"])
                for level, row in val["levels"].items():
                    writer.write(step, "val", row, level=level)
                writer.write(step, "val", {"loss": val["loss"]})
                logger.info("step %d: %s", step, _summary(val))
            if validate or every(train_cfg.checkpoint_every, step):  # validated: a "best" candidate
                loss = val["loss"] if validate else None
                ckpt.save(step, state, _grain_iterator(loader), val_loss=loss)
                if validate and ckpt.best_step() == step:
                    export(step, val_loss=val["loss"], best=True)
            if train_cfg.image_every > 0 and every(train_cfg.image_every, step) and primary:
                original, recons = validator.reconstructions(
                    state["params"], train_cfg.image_levels
                )
                save_image_grid(workdir / "images" / f"step_{step:07d}.png", original, recons)
            throughput.step, throughput.time = step, time.perf_counter()  # not the host work
        if val is None and train_cfg.eval_every >= 0:  # e.g. resumed after the last step
            val = validator.run(state["params"])
        export(step, val_loss=val["loss"] if val else None, final=True)
    finally:
        profile.stop()
        bar.close()
        writer.close()
        ckpt.close()
        loader.close()
    if start >= train_cfg.num_steps:  # resumed a finished phase: no step ran, no train loss
        summary = f"already complete at step {start}, nothing trained"
        summary += f" | {_summary(val)}" if val else ""
    elif val:
        summary = _summary(val)
    else:
        summary = f"train loss {metrics['loss']:.4g} (no validation)"
    return {
        "step": step,
        "start": start,
        "summary": summary,
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


def _seek(loader, step: int) -> str:
    """Puts `loader` where an uninterrupted run is after `step` steps (one batch a step) when
    the checkpoint's saved position does not fit it; says where it went."""
    seek = getattr(loader, "seek", None)
    if seek is None:
        return "at its first batch (this loader cannot seek)"
    seek(step)
    return f"placed after {step} batches of the current data (where step {step} leaves it)"


class _Profile:
    """jax.profiler trace of `num_steps` steps after the first one (which compiles) into
    `directory` (view with TensorBoard's profile plugin or Perfetto); 0 steps: off."""

    def __init__(self, directory: pathlib.Path, num_steps: int, start: int):
        self.directory, self.first, self.last = directory, start + 1, start + 1 + num_steps
        self.enabled, self.active = num_steps > 0, False

    def after_step(self, step: int, state) -> None:
        if not self.enabled:
            return
        if step == self.first:
            jax.block_until_ready(state)  # the trace starts after the compilation
            jax.profiler.start_trace(str(self.directory))
            self.active = True
        elif step == self.last:
            jax.block_until_ready(state)
            self.stop()

    def stop(self) -> None:
        if self.active:
            self.active = False
            jax.profiler.stop_trace()
            logger.info("profiler trace written to %s", self.directory)
