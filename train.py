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

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = pathlib.Path(__file__).resolve().parent
config_flags.DEFINE_config_file(
    "config",
    str(ROOT / "svi_jax" / "configs" / "demo.py"),
    "Training config file.",
    lock_config=True,
)
flags.DEFINE_string("workdir", "runs/tiny", "Checkpoints, logs, images and the export.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
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
    app.run(main)
