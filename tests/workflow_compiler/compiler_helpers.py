"""Specs and settings shared by the compiler tests of Kueue and environment capture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.spec import RunSpec, build_run_spec
from workflow_compiler.sweep.spec import SweepSpec

REPO = Path(__file__).resolve().parents[2]
GRID = {"space": {"n_estimators": "grid(50, 100)"}, "metric": "val_accuracy", "mode": "max", "search": "grid", "concurrency": 2}


@pytest.fixture(autouse=True)
def no_site_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests see the built-in pools and cluster defaults (import this fixture into a test module to apply it)."""
    monkeypatch.delenv("NBSCALE_POOLS", raising=False)
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)
    yield


def train(**fields: Any) -> RunSpec:
    """examples/train.ipynb run by alice."""
    return build_run_spec("examples/train.ipynb", root=REPO, user="alice", **fields)


def train_sweep(gpus: float = 0, **fields: Any) -> RunSpec:
    """A two-point grid sweep of examples/train.ipynb, ``gpus`` per trial."""
    return train(**fields).model_copy(update={"sweep": SweepSpec.model_validate({**GRID, "gpus_per_trial": gpus})})
