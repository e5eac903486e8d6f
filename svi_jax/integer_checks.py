"""The integer arguments every entry point takes (level, seed, num_samples): one rule, one
wording, shared by the functional API (`svi_jax.input_checks.check_level`), the codec API
(`svi_jax.codec.api`), the .sic reader (`svi_jax.codec.format`) and `svi-codec` (which adds
its flag name). Numpy only: the bitstream reader imports it without JAX.
"""

from __future__ import annotations

import operator

import numpy as np


def as_integer(value, name: str = "level", expected: str = "") -> int:
    """`value` as a Python int: ints and numpy / concrete JAX integer scalars pass
    (`operator.index`). A float (3.7, or 3.0: `int(3.7)` would silently give level 3), a bool
    or another type raises TypeError "{name} must be an integer{expected}, got ..."."""
    if not isinstance(value, bool | np.bool_):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an integer{expected}, got {value!r} ({type(value).__name__})")


def level_in_range(level, num_slices: int, name: str = "level") -> int:
    """A concrete level as a Python int in 1..num_slices (MODEL.md §1: level l transmits the
    first l of the S slices). TypeError for a non-integer (`as_integer`), ValueError
    "{name} must be an integer in 1..S, got l" outside the range."""
    expected = f" in 1..{num_slices}"
    value = as_integer(level, name, expected)
    if not 1 <= value <= num_slices:
        raise ValueError(f"{name} must be an integer{expected}, got {value}")
    return value
