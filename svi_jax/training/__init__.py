"""Training: `train_and_evaluate(config, workdir)` for the warming, main and GAN phases."""

from svi_jax.training.loop import TrainingDivergedError, train_and_evaluate

__all__ = ["TrainingDivergedError", "train_and_evaluate"]
