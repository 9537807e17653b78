"""From a Workflow object (and its pods) to the run record's status, progress, steps and detail.

Pure functions over the JSON Argo writes: ``status.nodes``, or ``status.compressedNodes`` (base64
of gzipped JSON), or nothing but ``status.offloadNodeStatusVersion`` when the controller keeps the
nodes in its database. A step pod that Kueue holds (Pending behind a scheduling gate) is queued,
not running, and the record says in which LocalQueue.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from typing import Any

from ...errors import ExecutionError
from ...store import Progress, RunRecord, StepState, utcnow

_PHASES = {"Pending": "PENDING", "Running": "RUNNING", "Succeeded": "SUCCEEDED", "Failed": "FAILED", "Error": "FAILED"}
_NODE_PHASES = {**_PHASES, "Skipped": "SUCCEEDED", "Omitted": "SUCCEEDED"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NODE_ID_ANNOTATION = "workflows.argoproj.io/node-id"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
OFFLOADED = ("step statuses are offloaded to Argo's database (status.offloadNodeStatusVersion); "
             "see the steps in the Argo UI or with `argo get`")


def workflow_nodes(status: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The workflow's nodes by id; None when they are offloaded to Argo's database."""
    if status.get("nodes"):
        return dict(status["nodes"])
    if status.get("compressedNodes"):
        try:
            return dict(json.loads(gzip.decompress(base64.b64decode(status["compressedNodes"]))))
        except (binascii.Error, OSError, ValueError) as exc:
            raise ExecutionError(f"the Workflow's status.compressedNodes is not base64 of gzipped JSON ({exc}); "
                                 "check the Argo controller's version") from None
    if status.get("offloadNodeStatusVersion"):
        return None
    return {}


def step_nodes(nodes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pod-type nodes in the order their steps started (not yet started ones last).

    Argo's times have whole seconds, so steps that started in the same second go in DAG order
    (their depth along the nodes' ``children``); the exit handler, which runs after the DAG, goes last.
    """
    depth = _depths(nodes)
    pods = [n for n in nodes.values() if n.get("type") == "Pod"]
    return sorted(pods, key=lambda n: (is_exit_handler(n), n.get("startedAt") is None, n.get("startedAt") or "",
                                       depth.get(n.get("id", ""), 0), n.get("id", "")))


def is_exit_handler(node: dict[str, Any]) -> bool:
    """True for the node of the Workflow's ``onExit`` template (Argo names it ``<workflow>.onExit``)."""
    return str(node.get("name", "")).endswith(".onExit")


def _depths(nodes: dict[str, dict[str, Any]]) -> dict[str, int]:
    children = {node_id: list(n.get("children") or []) for node_id, n in nodes.items()}
    has_parent = {c for kids in children.values() for c in kids}
    depth: dict[str, int] = {}
    frontier = [(node_id, 0) for node_id in nodes if node_id not in has_parent]
    while frontier:
        node_id, level = frontier.pop()
        if depth.get(node_id, -1) >= level or level > len(nodes):
            continue
        depth[node_id] = level
        frontier.extend((child, level + 1) for child in children.get(node_id, []))
    return depth


def step_name(node: dict[str, Any]) -> str:
    """How a step is called in logs and lists: the DAG task's name, else (the exit handler) its template's."""
    if is_exit_handler(node) and node.get("templateName"):
        return str(node["templateName"])
    return str(node.get("displayName") or node.get("templateName") or node.get("name") or node.get("id"))


def queued_pods(pods: list[dict[str, Any]]) -> dict[str, str]:
    """Node id → LocalQueue of each pod Kueue holds (Pending with a scheduling gate)."""
    held = {}
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        gates = spec.get("schedulingGates") or []
        if (pod.get("status") or {}).get("phase", "Pending") == "Pending" and gates:
            node_id = (meta.get("annotations") or {}).get(NODE_ID_ANNOTATION, meta.get("name", ""))
            held[node_id] = (meta.get("labels") or {}).get(QUEUE_LABEL) or f"scheduling gate {gates[0].get('name', '?')}"
    return held


def record_fields(wf: dict[str, Any], record: RunRecord, queued: dict[str, str]) -> dict[str, Any]:
    """The record fields the Workflow's status implies (status, progress, steps, times, error)."""
    status = wf.get("status") or {}
    nodes = workflow_nodes(status)
    new_status = _PHASES.get(status.get("phase") or "Pending", "PENDING")
    fields: dict[str, Any] = {"status": new_status, "started": status.get("startedAt") or record.started}
    if nodes is None:
        fields["progress"] = record.progress.model_copy(update={"detail": OFFLOADED, "queued": 0})
    else:
        steps = [n for n in step_nodes(nodes) if not is_exit_handler(n)]
        fields["steps"] = [_step_state(n, queued) for n in steps]
        fields["progress"] = _progress(steps, record, queued)
    if new_status in ("SUCCEEDED", "FAILED"):
        fields.update(finished=status.get("finishedAt") or utcnow(), error=status.get("message") if new_status == "FAILED" else None)
        if (wf.get("spec") or {}).get("shutdown"):
            fields.update(status="KILLED", error=f"cancelled ({status.get('message') or 'stopped'})")
    return fields


def _step_state(node: dict[str, Any], queued: dict[str, str]) -> StepState:
    status = _NODE_PHASES.get(node.get("phase") or "Pending", "PENDING")
    error = node.get("message") if status == "FAILED" else (f"queued in {queued[node['id']]}" if node.get("id") in queued else None)
    return StepState(name=step_name(node), status=status, error=error)  # type: ignore[arg-type]


def _progress(steps: list[dict[str, Any]], record: RunRecord, queued: dict[str, str]) -> Progress:
    phases = [n.get("phase") for n in steps]
    waiting = [n for n in steps if n.get("phase") == "Pending" and n.get("id") in queued]
    held = sorted({queued[n["id"]] for n in waiting})
    counts = {"running": sum(p == "Running" for p in phases), "failed": sum(p in ("Failed", "Error") for p in phases),
              "queued": len(waiting), "detail": f"queued in {', '.join(held)}" if held else None}
    if record.kind == "sweep":  # trials run inside the RayJob, out of Argo's sight: their count stays the sweep's own
        return record.progress.model_copy(update=counts)
    return Progress(done=sum(p in ("Succeeded", "Skipped", "Omitted") for p in phases), total=len(steps), unit="steps", **counts)
