"""Hyperparameter sweeps of a notebook on Ray Tune, with warm trial workers and nested MLflow runs.

Light to import: the spec models, Ray, MLflow and IPython load only when used (a sweep command is
a thin client of the warm sweep driver, which needs none of them). Public entry points:
``run_sweep`` (driver), ``SweepSpec`` (spec), ``add_sweep_arguments``/``sweep_from_args`` (CLI).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Domain", "SweepSpec", "parse_domain_text", "run_sweep"]

#: Where each public name lives, imported at its first use.
_HOMES = {"Domain": ".space", "parse_domain_text": ".space", "SweepSpec": ".spec", "run_sweep": ".driver"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(name)
