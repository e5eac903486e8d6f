"""Checkpoints with one orbax CheckpointManager in workdir/checkpoints, the config beside them.

Which checkpoints stay is orbax's own preservation policy: the latest `keep_checkpoints`
(`LatestN`) plus the one with the lowest validation loss (`BestN` on the metric saved with it;
checkpoints saved without a validation are kept only while they are among the latest). Each
checkpoint holds the whole training state (params, optimizer states, step, RNG, GAN
discriminator) under "state" and, for grain loaders, the data iterator position under "data"
(grain's own orbax handler, `grain.checkpoint.CheckpointSave`: one JSON file per process).

Resuming uses the newest checkpoint whose state restores: a damaged one (array data deleted,
the state folder gone, a truncated file) is skipped with a one-line warning naming it, and left
where it is until a new checkpoint of the same step replaces it. A saved data position that
does not fit the loader (the data source or the worker count changed, e.g. a moved data
folder of a run saved before file names became relative, or more images) never makes a
checkpoint damaged: the state is restored and `reposition(step)` (the loop's: the loader's
`seek`) puts the iterator where an uninterrupted run with this data would be, said in one
warning line. Nothing under
workdir/checkpoints is written before the run has decided to use the workdir (`config.json`
is written with the first save).
"""

from __future__ import annotations

import logging
import pathlib
import shutil

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

BEST_METRIC = "val_loss"
logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """No checkpoint of the workdir can be restored; the message says which and what to do."""


def _val_loss(metrics) -> float:
    return float(metrics[BEST_METRIC])


class _NoMetricsNote(logging.Filter):
    """Drops orbax's warning for every save without metrics: here that is by design (steps
    that were not validated are kept only as "latest", never ranked as "best")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsNote())


class Checkpointer:
    """workdir/checkpoints/<step>/{state, data}: keep the latest N plus the best by val_loss."""

    def __init__(self, workdir: str | pathlib.Path, config: ml_collections.ConfigDict):
        self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
        self._config_json = config.to_json_best_effort(indent=2)
        policy = ocp.checkpoint_managers
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                # best_fn/best_mode make best_step() answer; the policy decides what stays.
                best_fn=_val_loss,
                best_mode="min",
                preservation_policy=policy.AnyPreservationPolicy(
                    [
                        policy.LatestN(n=int(config.train.keep_checkpoints)),
                        policy.BestN(
                            get_metric_fn=_val_loss,
                            reverse=True,  # sorted high-to-low loss: the last is the lowest
                            n=1,
                            keep_checkpoints_without_metrics=False,
                        ),
                    ]
                ),
                enable_async_checkpointing=False,
                create=False,  # the folder is made by the first save, not by opening
            ),
        )

    def save(self, step: int, state, data_iterator=None, val_loss: float | None = None) -> None:
        """Saves `state` (and the grain iterator's position) at `step`; `val_loss` (the mean
        validation loss, when this step was validated) ranks it for "best"."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "config.json").write_text(self._config_json)
        if (self.directory / str(step)).exists():  # a damaged checkpoint skipped at resume
            shutil.rmtree(self.directory / str(step))
            self.manager.reload()
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        metrics = None if val_loss is None else {BEST_METRIC: float(val_loss)}
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        self.manager.wait_until_finished()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The saved step with the lowest val_loss, or None when no saved step has one."""
        if not any(self.manager.metrics(s) for s in self.manager.all_steps()):
            return None
        return self.manager.best_step()

    def restore(self, step: int, abstract_state, data_iterator=None, reposition=None) -> dict:
        """The state of `step` with the shardings of `abstract_state`; the grain iterator (if
        given and saved) is set to the saved position in place.

        When the saved position cannot be restored (grain refuses it: another data source or
        worker count, or its file is unreadable), the state still is: `reposition(step)`
        places the iterator and returns what it did (e.g. "placed at step 5 of the current
        data"), logged in one warning line with grain's reason. Without `reposition` the
        iterator is left where it is (at its start, when called on a fresh loader)."""
        restore = lambda **items: self.manager.restore(step, args=ocp.args.Composite(**items))
        state = restore(state=ocp.args.StandardRestore(abstract_state))["state"]
        # Only once the state restored: a damaged step must not move the iterator.
        if data_iterator is not None and (self.directory / str(step) / "data").exists():
            try:
                restore(data=grain.checkpoint.CheckpointRestore(data_iterator))
            except Exception as error:  # grain: ValueError (mismatch), JSON/OS errors (file)
                done = reposition(step) if reposition else "it starts at the first batch"
                logger.warning(
                    "%s: the saved data-iterator position does not fit the training data as "
                    "it is now (moved, changed or another worker count: %s); the model state "
                    "is restored and the data iterator is %s",
                    self.directory / str(step),
                    describe_error(error),
                    done,
                )
        return state

    def restore_newest_intact(
        self, abstract_state, data_iterator=None, reposition=None
    ) -> tuple[dict, int] | None:
        """(state, step) of the newest checkpoint whose state restores, or None without
        checkpoints (`data_iterator`, `reposition`: see `restore`).

        Damaged checkpoints are skipped with one warning line naming them.

        Raises:
          CheckpointError: checkpoints exist but none restores.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        damaged: list[str] = []
        for step in steps:
            try:
                state = self.restore(step, abstract_state, data_iterator, reposition)
            except Exception as error:  # orbax/TensorStore raise many types for damaged files
                damaged.append(f"{self.directory / str(step)} ({describe_error(error)})")
                continue
            if damaged:
                best = " (the best by validation loss)" if step == self.best_step() else ""
                logger.warning(
                    "skipped damaged checkpoint(s) %s; resuming from step %d%s",
                    "; ".join(damaged),
                    step,
                    best,
                )
            return state, step
        if not steps:
            return None
        raise CheckpointError(
            f"no intact checkpoint in {self.directory}: {'; '.join(damaged)}. Delete the "
            "damaged step folders to start this workdir from scratch, or use a new --workdir"
        )

    def close(self) -> None:
        self.manager.close()


def describe_error(error: BaseException, limit: int = 200) -> str:
    """ "Type: first line of the message", whole, or cut at a word with "..." past `limit`
    characters (orbax's and grain's messages run over many lines: the first says what)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def abstract_like(state, sharding) -> dict:
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state
    )
