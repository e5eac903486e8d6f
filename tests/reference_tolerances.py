"""Tolerances stated by the reference README (§8 "Suggested checks"), parsed, not retyped."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerances:
    tensor: float  # max|a-b| <= tensor * max(1, max|ref|)
    image_atol: float
    scalar_rtol: float
    grad_norm_rtol: float
    module_rtol: float
    param_rtol: float
    param_atol_of_norm: float  # per-parameter atol = this * grad_norm


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text, re.S)
    if not m:
        raise ValueError(f"tolerance not found in reference README: {pattern}")
    return float(m.group(1))


def parse_tolerances(readme: str) -> Tolerances:
    section = readme[readme.find("Suggested checks") :]
    return Tolerances(
        tensor=_num(r"max\|a−b\| ≤ ([0-9.e-]+)·max\(1", section),
        image_atol=_num(r"images atol ([0-9.e-]+)", section),
        scalar_rtol=_num(r"scalars.*?rtol ([0-9.e-]+)", section),
        grad_norm_rtol=_num(r"`grad_norm\*` rtol ([0-9.e-]+)", section),
        module_rtol=_num(r"per-module rtol ([0-9.e-]+)", section),
        param_rtol=_num(r"per-parameter rtol ([0-9.e-]+)", section),
        param_atol_of_norm=_num(r"atol ([0-9.e-]+)·grad_norm", section),
    )
