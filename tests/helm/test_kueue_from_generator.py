"""One code path for Kueue: the chart renders exactly what ``nbscale cluster kueue`` computes.

The operator's flow in docs/deploy.md: ``nbscale cluster kueue --teams … --format helm-values``
gives the chart's ``kueue:`` values; the chart only wraps them. So the objects the chart installs
must equal, spec for spec, the manifests the same command prints with ``--format manifests``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.chart import manifests, validate_values
from workflow_compiler.cli import main
from workflow_compiler.validation import validate_kueue

ROOT = Path(__file__).resolve().parents[2]
TEAMS = ROOT / "examples" / "kueue-teams.yaml"


def _generate(capsys: pytest.CaptureFixture[str], fmt: str) -> list[Any]:
    assert main(["cluster", "kueue", "--teams", str(TEAMS), "--format", fmt]) == 0
    return [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    return obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def test_the_chart_installs_what_the_generator_computes(capsys: pytest.CaptureFixture[str]) -> None:
    (values,) = _generate(capsys, "helm-values")
    generated = {_key(o): o for o in _generate(capsys, "manifests")}
    validate_values(values)
    rendered = {_key(o): o for o in manifests(values) if o["apiVersion"].startswith("kueue.x-k8s.io/")}

    assert set(rendered) == set(generated) and generated
    for key, obj in rendered.items():
        assert obj["apiVersion"] == generated[key]["apiVersion"] == "kueue.x-k8s.io/v1beta2"
        assert obj["spec"] == generated[key]["spec"], key
        validate_kueue(obj)
