"""Visible (re)compilation: functions that count and log each time JAX traces them.

Python code inside a jitted function runs once per trace, so a counter there counts
compilations; an unexpected recompile (a level passed as a Python int, a new shape) shows up
in the log and in tests.
"""

from __future__ import annotations

import collections
import functools
import logging

_COUNTS: collections.Counter[str] = collections.Counter()
log = logging.getLogger("svi_jax.tracing")


def count_trace(name: str) -> int:
    """Record one trace of `name` (call it from inside the traced function); returns the count."""
    _COUNTS[name] += 1
    return _COUNTS[name]


def traced(name: str):
    """Decorator: count and log every trace of the wrapped function under `name`."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            log.info("tracing %s (trace #%d)", name, count_trace(name))
            return fn(*args, **kwargs)

        return inner

    return wrap


def trace_count(name: str) -> int:
    return _COUNTS[name]
