"""From a Workflow's status to the run record: pure functions, tables of cases."""

from __future__ import annotations

import pytest

from workflow_compiler.errors import ExecutionError
from workflow_compiler.executors.argo.status import queued_pods, record_fields, workflow_nodes
from workflow_compiler.store import Progress, RunRecord


def _node(node_id: str, phase: str, started: str | None = "2026-01-01T00:00:00Z") -> dict:
    return {"id": node_id, "name": f"wf.{node_id}", "displayName": node_id, "type": "Pod", "phase": phase, "startedAt": started}


def _pod(node_id: str, *, gates: list[str], labels: dict[str, str], phase: str = "Pending") -> dict:
    return {"metadata": {"name": f"pod-{node_id}", "labels": labels, "annotations": {"workflows.argoproj.io/node-id": node_id}},
            "spec": {"schedulingGates": [{"name": g} for g in gates]}, "status": {"phase": phase}}


@pytest.mark.parametrize(("pod", "expected"), [
    (_pod("a", gates=["kueue.x-k8s.io/admission"], labels={"kueue.x-k8s.io/queue-name": "team-a"}), {"a": "team-a"}),
    (_pod("a", gates=["example.com/gate"], labels={}), {"a": "scheduling gate example.com/gate"}),
    (_pod("a", gates=[], labels={"kueue.x-k8s.io/queue-name": "team-a"}), {}),  # admitted: no gate left
    (_pod("a", gates=["kueue.x-k8s.io/admission"], labels={}, phase="Running"), {}),
])
def test_queued_pods(pod, expected):
    assert queued_pods([pod]) == expected


@pytest.mark.parametrize(("kind", "progress", "expected"), [
    ("run", Progress(), (1, 2, "steps")),
    ("pipeline", Progress(), (1, 2, "steps")),
    ("sweep", Progress(done=7, total=20, unit="trials"), (7, 20, "trials")),  # trials are counted by the sweep, not Argo
])
def test_progress_by_kind(kind, progress, expected):
    record = RunRecord(id="nbs-0123456789", kind=kind, notebook="n.ipynb", progress=progress)
    wf = {"status": {"phase": "Running", "nodes": {"a": _node("a", "Succeeded"), "b": _node("b", "Pending", None)}}}
    fields = record_fields(wf, record, {"b": "team-a"})
    got = fields["progress"]
    assert (got.done, got.total, got.unit) == expected
    assert (got.queued, got.detail) == (1, "queued in team-a")


@pytest.mark.parametrize(("phase", "shutdown", "status"), [
    ("Succeeded", None, "SUCCEEDED"), ("Failed", None, "FAILED"), ("Error", None, "FAILED"),
    ("Failed", "Stop", "KILLED"), ("Succeeded", "Terminate", "KILLED"), ("Running", "Stop", "RUNNING"),
])
def test_killed_only_once_argo_says_it_ended(phase, shutdown, status):
    record = RunRecord(id="nbs-0123456789", notebook="n.ipynb")
    wf = {"spec": {"shutdown": shutdown} if shutdown else {}, "status": {"phase": phase, "nodes": {}}}
    assert record_fields(wf, record, {})["status"] == status


def test_broken_compressed_nodes_say_what_is_wrong():
    with pytest.raises(ExecutionError, match="status.compressedNodes is not base64 of gzipped JSON"):
        workflow_nodes({"compressedNodes": "bm90IGd6aXA="})
