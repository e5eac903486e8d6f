"""Train progressive SIC: `python train.py [--config configs/<name>.py] [--workdir DIR]`.

With no flags: configs/demo.py (the tiny model, a warming phase then the main phase) on
scikit-image's bundled photos minus the held-out ones, in runs/tiny (runs/tiny/warming,
runs/tiny/main, final export in runs/tiny/export). Override any config field, e.g.
    python train.py --config configs/paper.py --workdir runs/paper \
        --config.data.train=/data/train --config.data.val=/data/val --config.phase=main
    python train.py --config.phase_overrides.warming.train.num_steps=600   # one phase only
Re-running the same command resumes from the newest intact checkpoint in the workdir (a
damaged one is skipped with a warning). Every input (folders, images, flags, checkpoints) is
checked before the first step; images are read with their EXIF orientation applied (as
viewers show them) and validation images of any size are padded as the codec pads. Multi-host:
pass --distributed on every host (jax.distributed.initialize reads the cluster from the
environment).
"""

import logging
import pathlib
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = pathlib.Path(__file__).resolve().parent
DEFAULT_CONFIG = ROOT / "svi_jax" / "configs" / "demo.py"


def fail(message: str) -> None:
    """The one-line error of a user mistake (the README's promise), exit status 1."""
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def config_argument(argv: list[str]) -> str | None:
    """The value of --config (`--config=X` or `--config X`) in `argv`, or None."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def flag_error(error: BaseException, argv: list[str]) -> str:
    """One line naming the flag or file of a flag-parsing failure.

    ml_collections reports a mistyped field (--config.train.num_step) as a KeyError or
    AttributeError whose text is the repr of "'num_step'\\nDid you mean ..." and names no
    flag: the flag is looked up in `argv`, the hint kept. Any other failure that is not
    absl's (flags.Error names its flag) comes from loading the --config file: it is named,
    with the error's last line (ml_collections embeds the file's traceback in some)."""
    text = str(error)
    overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    if isinstance(error, KeyError | AttributeError):
        hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
        key = hint.group(2) if hint else re.sub(r"^\W*|\W*$", "", text.split("\\n")[0])
        flag = next((f for f in overrides if key in f.split(".")), None)
        if flag is not None:
            suffix = f'; did you mean "{hint.group(1)}"?' if hint else ""
            return f"{flag}: the config has no field {key!r}{suffix}"
    config = config_argument(argv)
    if config is not None and (not isinstance(error, flags.Error) or "config file" in text):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        last = (
            last if re.match(r"\w+(Error|Exception)\b", last) else f"{type(error).__name__}: {last}"
        )
        return f"--config={config}: the config file fails to load: {last}"
    from svi_jax.safety import one_line

    return one_line(error, 1000)


_config = config_argument(sys.argv)
if _config is not None and not pathlib.Path(_config.split(":", 1)[0]).is_file():
    fail(
        f"--config={_config}: no such config file (relative paths start at the current "
        f"folder, {pathlib.Path.cwd()}; e.g. configs/demo.py, configs/tiny.py, configs/paper.py)"
    )
try:  # ml_collections applies --config.<field> overrides here, at definition
    config_flags.DEFINE_config_file(
        "config", str(DEFAULT_CONFIG), "Training config file.", lock_config=True
    )
except Exception as error:  # a mistyped field, a config file that raises
    fail(flag_error(error, sys.argv))
flags.DEFINE_string("workdir", "runs/tiny", "Checkpoints, logs, images and the export.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
FLAGS = flags.FLAGS


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with every mistake (unknown flag, bad value, mistyped config field,
    a config file that fails to load) one `train.py: error: ...` line and exit status 1.

    ml_collections defers a config file's load error until the config is read: reading it
    here makes it fail now, not as a traceback inside main."""
    try:
        rest = FLAGS(argv)
        FLAGS.config.to_dict()
    except Exception as error:  # absl's flags.Error, and what loading config files raises
        fail(flag_error(error, argv))
    return rest


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}: give settings as --config.<field>=<value>")
    import jax

    if FLAGS.distributed:
        jax.distributed.initialize()
    from svi_jax.compilation import enable_persistent_cache

    enable_persistent_cache()  # a resumed run loads its compiled steps ($SVI_JAX_COMPILATION_CACHE)
    absl_logging.set_verbosity(absl_logging.WARNING)  # quiet orbax/jax INFO lines
    logging.getLogger("svi_jax").setLevel(logging.INFO)  # keep ours (e.g. trace messages)
    from svi_jax.safety import fail_in_one_line, training_errors
    from svi_jax.training import train_and_evaluate

    with fail_in_one_line("train.py", training_errors()):
        result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if jax.process_index() == 0:
        for phase, phase_result in result.get("phases", {}).items():
            print(f"{phase}: step {phase_result['step']}: {phase_result['summary']}")
        print(f"checkpoints: {result['checkpoints']}")
        print(f"logs: {result['logs']}  (TensorBoard: {result['tensorboard']})")
        print(f"export: {result['export']}")
        if not result.get("phases"):  # several phases: each printed its own line above
            print(f"step {result['step']}: {result['summary']}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
