"""`--config configs/demo.py` for train.py: the embedded default (svi_jax/configs/demo.py)."""

from svi_jax.configs.demo import get_config  # noqa: F401
