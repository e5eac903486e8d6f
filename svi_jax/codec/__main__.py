"""python -m svi_jax.codec ... (same as the svi-codec console script)."""

import sys

from svi_jax.codec.cli import main

sys.exit(main())
