"""`--config configs/paper.py` for train.py, eval.py and the benchmarks.

The config itself lives in the package (svi_jax/configs/paper.py), importable as
`svi_jax.configs.paper`; this file keeps the short path working.
"""

from svi_jax.configs.paper import get_config  # noqa: F401
