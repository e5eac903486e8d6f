"""The model/training configs (`demo`, `paper`, `tiny`) and one loader for every `--config` flag.

`load_config("tiny")` and `load_config("configs/tiny.py")` give the same ConfigDict: a
name is a module of this package, anything else the path of a Python file that defines
`get_config()` (the top-level configs/*.py shims, or a user's own file). eval.py and every
benchmark take their --config through it; `resolve_config_path` gives the file for absl's
`config_flags` (benchmarks/train_step.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib

import ml_collections

NAMES = ("demo", "paper", "tiny")  # modules of this package with a get_config()


class ConfigError(ValueError):
    """A --config that names no known config and no readable config file (one line)."""


def _unknown(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"config {spec!r}: {why}; give a name ({', '.join(NAMES)}) or the path of a .py file "
        "that defines get_config(), e.g. configs/tiny.py"
    )


def resolve_config_path(spec: str | os.PathLike) -> pathlib.Path:
    """The config file that `spec` (a name of NAMES or a path) stands for.

    Raises:
      ConfigError: neither a known name nor an existing .py file.
    """
    text = os.fspath(spec)
    if text in NAMES:
        return pathlib.Path(__file__).with_name(f"{text}.py")
    path = pathlib.Path(text)
    if path.is_file():
        if path.suffix != ".py":
            raise _unknown(text, "not a .py file")
        return path
    if path.is_dir():
        raise _unknown(text, "is a folder")
    raise _unknown(text, "no such config name or file")


def load_config(spec: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of the config `spec` names: "tiny", "paper", "demo", or a file path.

    Raises:
      ConfigError: unknown name, missing file, or a file whose get_config() fails or is
        missing (the message names it and the known names).
    """
    text = os.fspath(spec)
    if text in NAMES:
        return importlib.import_module(f"svi_jax.configs.{text}").get_config()
    path = resolve_config_path(text)
    module_spec = importlib.util.spec_from_file_location(f"_svi_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # a user's config file can fail in any way
        raise ConfigError(
            f"cannot load config {path}: {type(error).__name__}: {error}".splitlines()[0]
        ) from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise _unknown(text, "the file defines no get_config()")
    try:
        return get_config()
    except Exception as error:
        first = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(f"cannot load config {path}: get_config() raised {first}") from None


def load_config_or_exit(parser, spec: str | os.PathLike) -> ml_collections.ConfigDict:
    """`load_config` for a command line: a mistake ends the program with one line,
    `<prog>: error: --config ...` (exit status 2, as argparse's own usage errors).

    parser: the program's `argparse.ArgumentParser` (its `prog` and `exit`).
    """
    try:
        return load_config(spec)
    except ConfigError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
