"""Recorded single-user pods (``pods/NAME.json``, the shape KubeSpawner creates) and what capture makes of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PODS = Path(__file__).parent / "pods"


def recorded_pod(name: str) -> dict[str, Any]:
    """A recorded pod object from ``pods/NAME.json``."""
    pod: dict[str, Any] = json.loads((PODS / f"{name}.json").read_text(encoding="utf-8"))
    return pod


def captured(name: str, modes: str = "ReadWriteMany", **allow: Any) -> Any:
    """The PodEnvironment of a recorded pod whose claims all have access mode ``modes`` (no API involved)."""
    from workflow_compiler.podenv import claims_of, pod_environment_from

    pod = recorded_pod(name)
    claims = claims_of(pod["spec"].get("volumes") or [])
    return pod_environment_from(pod, claim_access_modes={c: [modes] for c in claims}, **allow)


def serve_pod(sim: Any, pod: dict[str, Any]) -> None:
    """Put ``pod`` into the Kubernetes simulation (``kube_sim.KubeSim``) at its namespace."""
    sim.put("pods", pod["metadata"]["namespace"], pod, "ADDED")


def serve_claim(sim: Any, namespace: str, name: str, modes: list[str]) -> str:
    """Put a bound PersistentVolumeClaim with these access modes into the simulation; returns its API path."""
    sim.put("persistentvolumeclaims", namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound", "accessModes": modes}}, "ADDED")
    return f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
