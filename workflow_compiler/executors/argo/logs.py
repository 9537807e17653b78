"""A cluster run's log: the ``main`` container of each step's pod, in the order the steps started.

The log is one text that only grows, so the REST API's ``logs(run_id, offset)`` long-poll and
``nbscale logs -f`` read it by byte offset as they do a local run's file. Each step's block is
headed by its step name. What was read of a pod is kept under the run's folder: when the pod is
gone (pod GC deletes finished pods), the block keeps what was read and ends with where the step's
output is (its MLflow run) instead of failing. Steps that run side by side can still reorder text
already read; the blocks are in start order, as Argo records it.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...private_files import write_private
from ...store import RunRecord
from .kube import KubeCalls, KubernetesObjectGone
from .status import NODE_ID_ANNOTATION, WORKFLOW_LABEL, step_name, step_nodes

log = logging.getLogger(__name__)

_FINISHED = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")


def step_header(name: str) -> str:
    """The line that opens a step's block."""
    return f"----- step {name} -----\n"


class StepLogs:
    """Reads the step pods' logs of one run, caching them in ``cache_dir`` (a private folder that exists)."""

    def __init__(self, calls: KubeCalls, namespace: str, cache_dir: Path) -> None:
        self.calls = calls
        self.namespace = namespace
        self.cache_dir = cache_dir

    def read(self, record: RunRecord, nodes: dict[str, dict[str, Any]]) -> tuple[str, tuple[str, str] | None]:
        """The whole log so far (one block per started step), and the (node id, pod) of the step whose
        block ends it when that step is the one running: its pod's log can be followed from there."""
        pods = self.pods_by_node(record.workflow_name)
        blocks = [n for n in step_nodes(nodes) if n.get("startedAt") or n.get("id") in pods]
        text = "".join(step_header(step_name(n)) + self._block(record, n, pods.get(n["id"])) for n in blocks)
        running = [n for n in blocks if n.get("phase") == "Running"]
        if len(running) != 1 or running[0] is not blocks[-1] or running[0]["id"] not in pods:
            return text, None
        return text, (running[0]["id"], pods[running[0]["id"]])

    def pods_by_node(self, workflow: str) -> dict[str, str]:
        """Node id → pod name of the workflow's pods that still exist."""
        listing = self.calls.call("list", "pods", self.namespace, self.calls.core.list_namespaced_pod, self.namespace,
                                  label_selector=f"{WORKFLOW_LABEL}={workflow}")
        found = {}
        for pod in listing.items:
            annotations = pod.metadata.annotations or {}
            found[annotations.get(NODE_ID_ANNOTATION, pod.metadata.name)] = pod.metadata.name
        return found

    def follow(self, node_id: str, pod: str) -> Iterator[str]:
        """The pod's ``main`` log as it is written (``follow=true``), after what the cache already holds."""
        cache = self.cache_dir / f"{node_id}.log"
        skip = len(cache.read_text(encoding="utf-8")) if cache.is_file() else 0
        response = self.calls.call("follow", "pods/log", self.namespace, self.calls.core.read_namespaced_pod_log, pod,
                                   self.namespace, container="main", follow=True, _preload_content=False)
        decoder, text = codecs.getincrementaldecoder("utf-8")(errors="replace"), ""
        try:
            for data in response.stream(4096):
                start, text = len(text), text + decoder.decode(data)
                if len(text) > skip:
                    yield text[max(start, skip):]
        finally:
            response.release_conn()
            if len(text) > skip:
                write_private(cache, text.encode())

    def _block(self, record: RunRecord, node: dict[str, Any], pod: str | None) -> str:
        cache = self.cache_dir / f"{node['id']}.log"
        kept = cache.read_text(encoding="utf-8") if cache.is_file() else ""
        if pod is not None:
            try:
                text = self.calls.call("read", "pods/log", self.namespace, self.calls.core.read_namespaced_pod_log, pod,
                                       self.namespace, container="main")
            except KubernetesObjectGone:
                text = None
            if text is not None and len(text) >= len(kept):
                if text != kept:
                    write_private(cache, text.encode())
                return str(text)
        if node.get("phase") not in _FINISHED:
            return kept  # not started yet, or between a pod's end and Argo's update
        return kept + ("" if not kept or kept.endswith("\n") else "\n") + gone_note(record, step_name(node))


def gone_note(record: RunRecord, step: str) -> str:
    """What the log says for a step whose pod was deleted: where its output is."""
    if record.mlflow_run_id:
        where = f"MLflow run {record.mlflow_run_id}" + (f" ({record.links['mlflow']})" if record.links.get("mlflow") else "")
    else:
        where = f"MLflow, in the run tagged nbscale.workflow={record.workflow_name}"
    return f"[the pod of step {step} is gone (pod GC); its output notebook and HTML are in {where}]\n"
