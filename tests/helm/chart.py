"""Render helm/nbscale with Helm's own engine (helm-python-sdk) and the value sets the tests share."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "nbscale"
RELEASE, NAMESPACE = "nbscale", "jhub"
#: the chart's lowest supported Kubernetes (Chart.yaml kubeVersion), for kubernetes-validate
KUBE_VERSION = "1.29.0"

_KUEUE = {
    "enabled": True,
    "resourceFlavors": [
        {"name": "a100", "spec": {"nodeLabels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
    ],
    "clusterQueues": [
        {"name": "team-a", "spec": {
            "cohortName": "gpus",
            "namespaceSelector": {},
            "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [
                {"name": "a100", "resources": [
                    {"name": "cpu", "nominalQuota": 64}, {"name": "memory", "nominalQuota": "256Gi"},
                    {"name": "nvidia.com/gpu", "nominalQuota": 8, "borrowingLimit": 0}]}]}],
        }},
    ],
    "localQueues": [{"name": "team-a", "namespace": "jhub", "spec": {"clusterQueue": "team-a"}}],
}

#: name -> values; each is rendered, validated and compared with tests/helm/golden/<name>.yaml
VALUE_SETS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "postgres-2-replicas": {"quotas": {
        "replicas": 2,
        "database": {"type": "postgres", "postgres": {"secretName": "nbscale-quotas-db", "secretKey": "url"}},
        "cookieSecret": {"secretName": "nbscale-quotas-cookie", "secretKey": "cookie-secret"},
    }},
    "kueue": {"kueue": _KUEUE},
    "mlflow-pvc": {"mlflow": {"enabled": True, "backendStore": {"secretName": "mlflow-db", "secretKey": "url"}}},
    "mlflow-s3": {"mlflow": {
        "enabled": True, "backendStore": {"secretName": "mlflow-db", "secretKey": "url"},
        "artifacts": {"type": "s3", "s3": {"bucket": "team-mlflow", "prefix": "runs", "endpointUrl": "http://minio.minio:9000",
                                           "credentialsSecretName": "mlflow-s3"}},
    }},
    "network-policies-off": {
        "quotas": {"networkPolicy": {"enabled": False}},
        "mlflow": {"enabled": True, "backendStore": {"secretName": "mlflow-db", "secretKey": "url"}, "networkPolicy": {"enabled": False}},
    },
}


@cache
def _chart() -> Any:
    import helm_python

    return helm_python.Chart.load(CHART)


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as ``helm template nbscale helm/nbscale -n jhub`` prints it."""
    return dict(_chart().render(values, name=RELEASE, namespace=NAMESPACE))


def validate_values(values: dict[str, Any]) -> None:
    """Check ``values`` (merged over the chart's defaults) against values.schema.json; raises HelmValuesError."""
    chart = _chart()
    chart.validate_schema(chart.merge_values(values))


def manifests(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rendered object, in template order (NOTES.txt left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def golden_text(values: dict[str, Any]) -> str:
    """The render as one reviewable YAML stream: each template under a ``# Source:`` line."""
    parts = []
    for path, text in sorted(render(values).items()):
        body = text.strip()
        if body and path.endswith(".yaml") and any(not line.startswith("#") for line in body.splitlines()):
            parts.append(f"---\n# Source: {path}\n{body}\n")
    return "".join(parts)
