"""One `--config` loader for eval.py and every benchmark: a name (tiny, paper, demo) or a path
gives the same config; anything else is one line naming the known names."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from svi_jax.configs import NAMES, ConfigError, load_config, resolve_config_path
from svi_jax.evaluation.sources import EvalInputError, load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@pytest.mark.parametrize("name", NAMES)
def test_a_name_and_its_paths_give_the_same_config(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    by_name = load_config(name).to_dict()
    assert load_config(f"configs/{name}.py").to_dict() == by_name  # the top-level shim
    assert load_config(ROOT / "svi_jax" / "configs" / f"{name}.py").to_dict() == by_name
    assert resolve_config_path(name) == ROOT / "svi_jax" / "configs" / f"{name}.py"


def test_unknown_configs_are_one_line_naming_the_known_ones(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "broken.py").write_text("def get_config():\n    raise RuntimeError('no\\nway')\n")
    cases = {
        "nope": "no such config name or file",
        "configs/nope.py": "no such config name or file",
        str(tmp_path): "is a folder",
        str(tmp_path / "notes.txt"): "not a .py file",
        str(tmp_path / "empty.py"): "defines no get_config",
    }
    for spec, why in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(spec)
        message = str(caught.value)
        assert "\n" not in message and why in message and "(demo, paper, tiny)" in message
    with pytest.raises(ConfigError, match=r"get_config\(\) raised RuntimeError: no$"):
        load_config(tmp_path / "broken.py")
    assert load_config_file("tiny").model.latent_channels == 64  # eval.py --config takes names
    with pytest.raises(EvalInputError, match="demo, paper, tiny"):
        load_config_file("nope")


def _load(name: str, monkeypatch):
    """benchmarks/<name>.py as a module (its own imports find _report), under another name so
    it cannot shadow the repository's eval.py."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["forward", "eval", "codec"])
def test_benchmarks_take_a_name_or_a_path_and_refuse_others_in_one_line(name, monkeypatch, capsys):
    module = _load(name, monkeypatch)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--config", "configs/nope.py"])
    with pytest.raises(SystemExit) as caught:
        module.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert caught.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"{name}.py: error: config 'configs/nope.py'") and "tiny" in err[0]


def test_forward_benchmark_keeps_the_configs_remat_unless_told(monkeypatch):
    forward = _load("forward", monkeypatch)
    monkeypatch.chdir(ROOT)
    assert forward.configure([])[1].model.remat == "auto"  # paper.py's own setting
    assert forward.configure(["--config", "configs/tiny.py"])[1].model.remat is False
    assert forward.configure(["--remat"])[1].model.remat is True  # the old flag form
    assert forward.configure(["--remat", "off"])[1].model.remat is False
    assert forward.configure(["--chunk", "4"])[1].model.attention_chunk_windows == 4


def test_load_config_or_exit_is_one_line(capsys):
    from svi_jax.configs import load_config_or_exit

    parser = argparse.ArgumentParser(prog="prog.py")
    assert load_config_or_exit(parser, "tiny").model.latent_channels == 64
    with pytest.raises(SystemExit) as caught:
        load_config_or_exit(parser, "bogus")
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("prog.py: error: config 'bogus'")


def test_train_step_takes_a_name(monkeypatch):
    """benchmarks/train_step.py's absl --config takes a file: a name is resolved to it first
    (in a subprocess: the module defines absl flags that train.py's tests define too)."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import train_step as t\n"
        "print(t.resolve_config_argv(['x', '--config', 'tiny', '--config.seed=3'])[2])\n"
        "print(t.resolve_config_argv(['x', '--config=configs/paper.py:arg'])[1])\n"
        "t.resolve_config_argv(['x', '--config', 'nope'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    out = done.stdout.splitlines()
    assert out == [str(ROOT / "svi_jax" / "configs" / "tiny.py"), "--config=configs/paper.py:arg"]
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("train_step.py: error: config 'nope'")
