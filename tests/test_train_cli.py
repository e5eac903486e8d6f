"""train.py's command line: every config mistake is one `train.py: error: ...` line (exit 1)
naming the flag or file, before anything is written."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from svi_jax.configs import tiny
from svi_jax.training import preflight, train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_train(tmp_path, *args, devices: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"--workdir={tmp_path / 'run'}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, devices, expected",
    [
        (
            ["--config.train.num_step=3"],
            None,
            ["--config.train.num_step", 'did you mean "num_steps"'],
        ),
        (["--config.phase=mian"], None, ["--config.phase=mian", "mian is not a phase"]),
        (["--config=configs/nope.py"], None, ["configs/nope.py", "no such"]),
        (["--config.train.num_steps=many"], None, ["--config.train.num_steps", "many"]),
        (["--nope=1"], None, ["nope"]),
        ([], 3, ["--config.data.batch_size=2", "3 devices", "--config.data.batch_size=3"]),
    ],
    ids=["typo", "bad-phase", "missing-config", "bad-value", "unknown-flag", "3-devices"],
)
def test_config_mistakes_are_one_line(tmp_path, args, devices, expected):
    proc = run_train(tmp_path, *args, devices=devices)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("train.py: error: "), lines[0]
    for text in expected:
        assert text.lower() in lines[0].lower(), lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_batch_not_divisible_by_devices_is_refused_before_writing(tmp_path, monkeypatch):
    cfg = tiny.get_config()
    cfg.data.batch_size = 4
    monkeypatch.setattr(jax, "device_count", lambda: 3)
    with pytest.raises(preflight.PreflightError, match=r"batch_size=4 .*3 devices.*=3 or .*=6"):
        train_and_evaluate(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
