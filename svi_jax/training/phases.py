"""A training run's phases: `config.phase` ("warming,main") as a sequence, each phase's config
(`config.phase_overrides.<phase>` applied) and the step count each phase runs.

`config.train.num_steps` is every phase's count unless `phase_overrides.<phase>.train.num_steps`
sets that phase's (the demo's warming phase does): `step_plan` names, for the log, the flag
that sets each phase's count.
"""

from __future__ import annotations

import ml_collections

from svi_jax.training import steps
from svi_jax.training.preflight import PreflightError


def phase_sequence(phase: str) -> tuple[str, ...]:
    """ "warming,main" -> ("warming", "main").

    Raises:
      PreflightError: a name is not one of steps.PHASES (the message names the flag).
    """
    names = tuple(p.strip() for p in str(phase).split(",") if p.strip())
    bad = [p for p in names if p not in steps.PHASES]
    if not names or bad:
        raise PreflightError(
            f"--config.phase={phase}: {', '.join(bad) or 'no phase'} is not a phase; name "
            f"{', '.join(steps.PHASES)} or a comma-separated sequence of them (e.g. warming,main)"
        )
    return names


def phase_config(config: ml_collections.ConfigDict, phase: str) -> ml_collections.ConfigDict:
    """`config` for one phase: `phase` set and `config.phase_overrides.<phase>` applied."""
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.phase = phase
    overrides = config.get("phase_overrides", {}).get(phase)
    if overrides:
        flat = {}

        def walk(prefix, node):
            for key, value in node.items():
                if isinstance(value, dict | ml_collections.ConfigDict):
                    walk(f"{prefix}{key}.", value)
                else:
                    flat[f"{prefix}{key}"] = value

        walk("", overrides)
        cfg.update_from_flattened_dict(flat)
    return cfg


def step_plan(config: ml_collections.ConfigDict, phases: tuple[str, ...]) -> str:
    """ "warming 1000 (--config.phase_overrides.warming.train.num_steps), main 250
    (--config.train.num_steps)": each phase's step count and the flag that sets it."""
    parts = []
    for phase in phases:
        override = config.phase_overrides.get(phase, {}).get("train", {}).get("num_steps")
        flag = "train.num_steps" if override is None else f"phase_overrides.{phase}.train.num_steps"
        count = phase_config(config, phase).train.num_steps
        parts.append(f"{phase} {count} (--config.{flag})")
    return ", ".join(parts)
