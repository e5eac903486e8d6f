"""Metric writers: TensorBoard event files and a JSON-lines file of every logged scalar."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from tensorboardX import SummaryWriter

from svi_jax.data.image_io import save_png


class MetricWriter:
    """Writes scalars to workdir/tensorboard and workdir/metrics.jsonl (primary host only)."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool = True):
        self.enabled = enabled
        workdir = pathlib.Path(workdir)
        self.jsonl_path = workdir / "metrics.jsonl"
        self.tb_dir = workdir / "tensorboard"
        if enabled:
            self._tb = SummaryWriter(str(self.tb_dir))
            self._jsonl = open(self.jsonl_path, "a")  # noqa: SIM115 - closed in close()

    def write(self, step: int, split: str, scalars: dict, level: int | None = None) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items() if not (k == "level" and level)}
        for name, value in clean.items():
            self._tb.add_scalar(f"{split}/{name}", value, step)
            if level is not None:
                self._tb.add_scalar(f"{split}_level{level:02d}/{name}", value, step)
        record = {"step": int(step), "split": split, **({"level": level} if level else {})}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def save_image_grid(path: str | pathlib.Path, original: np.ndarray, recons: list[np.ndarray]):
    """One row: the original then the reconstructions (float HWC in [0, 1]) as a PNG."""
    row = [original, *recons]
    gap = np.ones((original.shape[0], 4, 3), np.float32)
    parts = []
    for i, image in enumerate(row):
        parts.append(np.asarray(image, np.float32))
        if i < len(row) - 1:
            parts.append(gap)
    grid = np.concatenate(parts, axis=1)
    return save_png(path, np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8))
