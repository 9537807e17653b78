"""The executor registry: nbscale's own executors by name, third parties' through entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from workflow_compiler.executors import base
from workflow_compiler.executors.argo import ArgoExecutor
from workflow_compiler.executors.local import LocalExecutor


def test_own_executors_resolve_without_scanning_every_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(**_: Any) -> list[EntryPoint]:
        raise AssertionError("scanned every installed distribution for nbscale's own executor")

    monkeypatch.setattr(base, "entry_points", scan)
    registry = base.ExecutorRegistry()
    assert registry.get("local") is LocalExecutor
    assert registry.get("argo") is ArgoExecutor


def test_a_third_party_executor_is_found_in_its_own_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = EntryPoint(name="theirs", value="workflow_compiler.executors.local:LocalExecutor", group=base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "entry_points", lambda **_: [theirs])
    assert base.ExecutorRegistry().get("theirs") is LocalExecutor


def test_an_unknown_executor_names_the_known_ones() -> None:
    with pytest.raises(base.UnknownExecutor, match=r"no executor 'nope'; known executors: .*argo.*local"):
        base.ExecutorRegistry().get("nope")
