"""Hyperparameter sweeps of a notebook on Ray Tune, with warm trial workers and nested MLflow runs.

Light to import: Ray, MLflow and IPython load only when a sweep runs. Public entry points:
``run_sweep`` (driver), ``SweepSpec`` (spec), ``add_sweep_arguments``/``sweep_from_args`` (CLI).
"""

from __future__ import annotations

from typing import Any

from .space import Domain, parse_domain_text
from .spec import SweepSpec

__all__ = ["Domain", "SweepSpec", "parse_domain_text", "run_sweep"]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":  # deferred: the driver imports ray
        from .driver import run_sweep

        return run_sweep
    raise AttributeError(name)
