"""Checkpoints with orbax: the last N under workdir/checkpoints, the best (lowest validation
loss) under workdir/checkpoints/best, the config as JSON beside them.

Each checkpoint holds the whole training state (params, optimizer states, step, RNG, GAN
discriminator) and, when the loader supports it, the data iterator position (grain JSON).
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp

BEST_METRIC = "val_loss"


class Checkpointer:
    def __init__(self, workdir: str | pathlib.Path, config: ml_collections.ConfigDict):
        self.directory = pathlib.Path(workdir).resolve() / "checkpoints"
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "config.json").write_text(config.to_json_best_effort(indent=2))
        t = config.train
        self.latest = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=t.keep_checkpoints, enable_async_checkpointing=False
            ),
        )
        self.best = ocp.CheckpointManager(
            self.directory / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[BEST_METRIC],
                best_mode="min",
                enable_async_checkpointing=False,
            ),
        )

    @staticmethod
    def _args(state, data_state: bytes | None):
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(json.loads(data_state))
        return ocp.args.Composite(**items)

    def save(self, step: int, state, data_state: bytes | None) -> None:
        self.latest.save(step, args=self._args(state, data_state), force=True)
        self.latest.wait_until_finished()

    def save_best(self, step: int, state, val_loss: float) -> bool:
        """Saves when `val_loss` is the lowest so far; returns whether it did."""
        best_step = self.best.best_step()
        if best_step is not None:
            previous = self.best.metrics(best_step) or {}
            if previous.get(BEST_METRIC, float("inf")) <= val_loss:
                return False
        self.best.save(
            step, args=self._args(state, None), metrics={BEST_METRIC: float(val_loss)}, force=True
        )
        self.best.wait_until_finished()
        return True

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, step: int, abstract_state) -> tuple[dict, bytes | None]:
        """-> (state with the shardings of `abstract_state`, data iterator state or None)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if (self.directory / str(step) / "data").exists():
            items["data"] = ocp.args.JsonRestore()
        restored = self.latest.restore(step, args=ocp.args.Composite(**items))
        data = restored.get("data") if "data" in items else None
        return restored["state"], (json.dumps(data).encode() if data is not None else None)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def abstract_like(state, sharding) -> dict:
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), state
    )
