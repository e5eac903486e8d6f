"""`--config configs/tiny.py` for train.py, eval.py and the benchmarks.

The config itself lives in the package (svi_jax/configs/tiny.py), importable as
`svi_jax.configs.tiny`; this file keeps the short path working.
"""

from svi_jax.configs.tiny import get_config  # noqa: F401
