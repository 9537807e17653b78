"""Cluster settings: defaults, YAML overrides, and values that could break a manifest refused early."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from workflow_compiler.cluster import ClusterConfig, load_cluster_config
from workflow_compiler.errors import CompileError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)
    config = load_cluster_config()
    assert config == ClusterConfig()
    assert (config.workspace_claim_template, config.workspace_mount, config.pod_gc_strategy) == (
        "claim-{username}", "/home/jovyan", "OnPodCompletion")
    assert config.mlflow_tracking_uri is None and config.namespace is None


def test_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("namespace: hub\nservice_account: runner\npod_gc_strategy: OnWorkflowSuccess\n", encoding="utf-8")
    monkeypatch.setenv("NBSCALE_CLUSTER_CONFIG", str(path))
    assert load_cluster_config().namespace == "hub"
    assert load_cluster_config(path).service_account == "runner"
    path.write_text("", encoding="utf-8")
    assert load_cluster_config(path) == ClusterConfig()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("namespace", "Team_A", "not a namespace name"),
    ("service_account", "Runner!", "not a service account name"),
    ("workspace_claim_template", "claim-{user}", "only the placeholder {username}"),
    ("workspace_claim_template", "Claim {username}", "must give a DNS-1123 name"),
    ("workspace_mount", "home/jovyan", "absolute folder"),
    ("workspace_mount", "/", "absolute folder"),
    ("workspace_mount", "/home/{{workflow.name}}", "must not contain '{{'"),
    ("mlflow_tracking_uri", "http://x/{{workflow.name}}", "must not contain '{{'"),
    ("mlflow_tracking_uri", "http://x y", "whitespace"),
    ("default_image", "img}}", "must not contain"),
    ("pod_gc_strategy", "Never", "OnPodCompletion"),
    ("artifact_repository_ref", {"configMap": "a", "bucket": "b"}, "only the keys configMap and key"),
    ("ttl_seconds_after_finished", -1, "greater than or equal to 0"),
    ("unknown_field", 1, "Extra inputs are not permitted"),
])
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClusterConfig.model_validate({field: value})


def test_bad_file_is_a_compile_error_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("namespace: Bad_NS\n", encoding="utf-8")
    with pytest.raises(CompileError, match=r"cluster config .* is invalid: namespace: "):
        load_cluster_config(path)
    with pytest.raises(CompileError, match="does not exist"):
        load_cluster_config(tmp_path / "missing.yaml")
