"""Render helm/nbscale with Helm's own engine (helm-python-sdk) and the value sets the tests share."""

from __future__ import annotations

import os
import re
import shutil
import sys
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


def container_of(objects: list[dict[str, Any]], deployment: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first container of a rendered Deployment, and its pod spec."""
    found = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment)
    pod = found["spec"]["template"]["spec"]
    return pod["containers"][0], pod


def local_command(container: dict[str, Any], pod: dict[str, Any], *, secrets: dict[tuple[str, str], str],
                  workdir: Path) -> tuple[list[str], dict[str, str]]:
    """A rendered container's command line and environment as they would be in its pod, on this machine.

    Each volume mount becomes a folder under ``workdir``; ``secrets`` answers each secretKeyRef by
    (Secret, key); 0.0.0.0 becomes 127.0.0.1 (servers in tests listen on loopback only); the image's
    ``python`` and console scripts are the test's virtualenv's.
    """
    mounts = {m["mountPath"]: workdir / m["name"] for m in container.get("volumeMounts", [])}
    for folder in mounts.values():
        folder.mkdir(parents=True, exist_ok=True)
    assert {v["name"] for v in pod.get("volumes", [])} == {m["name"] for m in container.get("volumeMounts", [])}

    # one pass, whole path components only: a replaced path is never rewritten again
    pattern = re.compile("|".join(rf"(?<![\w.-]){re.escape(m)}(?=/|$)" for m in sorted(mounts, key=len, reverse=True)) or "(?!)")

    def local(text: str) -> str:
        return pattern.sub(lambda match: str(mounts[match.group(0)]), text).replace("0.0.0.0", "127.0.0.1")

    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = local(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = local(secrets[(ref["name"], ref["key"])])
    venv = Path(sys.executable).parent
    command = [sys.executable if part == "python" else shutil.which(part, path=str(venv)) or part for part in container["command"]]
    return [*command, *(local(arg) for arg in container.get("args", []))], env
