"""A simulated Argo controller: moves Workflows through Argo's phases with node statuses and pods.

What it imitates (enough for the executor, not Argo): the entrypoint DAG's tasks run one after
another, each as a Pod node with a pod (``main`` container log lines appear while it runs); the
``onExit`` handler runs at the end and after ``spec.shutdown: Stop``; ``Terminate`` fails at once.
A pod can be held Pending by a Kueue scheduling gate, nodes can be compressed or offloaded, and
finished pods can be deleted (pod GC), and a Stop can take a while.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from .server import KubeSim

KUEUE_GATE = "kueue.x-k8s.io/admission"
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"


def now() -> str:
    """An RFC 3339 timestamp, as Argo writes them."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class SimBehaviour:
    """How the simulated controller runs workflows; tests change it before submitting."""

    step_seconds: float = 0.4
    log_lines: int = 3
    hold_queue: str | None = None  # pods wait behind a Kueue gate, labelled with this LocalQueue
    compress_nodes: bool = False
    offload_nodes: bool = False
    pod_gc: bool = False
    exit_seconds: float = 0.2
    fail_step: str | None = None
    stop_seconds: float = 0.0  # how long a Stop takes to end the running pods (their grace period)


@dataclass
class _Run:
    tasks: list[str]
    templates: dict[str, str]
    on_exit: str | None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    index: int = 0
    started: float = 0.0
    lines: int = 0
    exit_node: str | None = None
    phase: str = "Running"
    shutdown_seen: float | None = None


class ArgoSimController:
    """Advances every Workflow the simulation holds, every ``tick`` seconds, in a thread."""

    def __init__(self, sim: KubeSim, *, tick: float = 0.05) -> None:
        self.sim = sim
        self.tick = tick
        self.behaviour = SimBehaviour()
        self._runs: dict[tuple[str, str], _Run] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="argo-sim", daemon=True)

    def start(self) -> ArgoSimController:
        """Run the loop in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the loop."""
        self._stop.set()
        self._thread.join(5)

    def reset(self) -> None:
        """Default behaviour, no runs (between tests)."""
        self.behaviour = SimBehaviour()
        self._runs.clear()

    def release_gates(self) -> None:
        """Kueue admits the held pods: their scheduling gates go."""
        self.behaviour.hold_queue = None
        with self.sim.cond:
            for (kind, ns, _), pod in list(self.sim.state.objects.items()):
                if kind == "pods" and pod["spec"].get("schedulingGates"):
                    self.sim.put("pods", ns, {**pod, "spec": {**pod["spec"], "schedulingGates": []}})

    # the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            with self.sim.cond:
                workflows = [o for (k, _, _), o in self.sim.state.objects.items() if k == "workflows"]
            for wf in workflows:
                try:
                    self._advance(wf)
                except Exception as exc:  # noqa: BLE001 - the simulation reports, the test fails on the result
                    print(f"argo-sim: {wf['metadata']['name']}: {exc!r}")

    def _advance(self, wf: dict[str, Any]) -> None:
        ns, name = wf["metadata"]["namespace"], wf["metadata"]["name"]
        run = self._runs.get((ns, name))
        if run is None:
            if wf.get("status", {}).get("phase") in ("Succeeded", "Failed", "Error"):
                return
            run = self._runs[(ns, name)] = _plan(wf)
            run.nodes[name] = {"id": name, "name": name, "displayName": name, "type": "DAG", "phase": "Running", "startedAt": now()}
            self._write(wf, run, startedAt=now())
        if run.phase != "Running":
            return
        shutdown = wf.get("spec", {}).get("shutdown")
        changed = self._shutdown(wf, run, shutdown) if shutdown else self._step(wf, run)
        if changed:
            self._write(wf, run)

    def _step(self, wf: dict[str, Any], run: _Run) -> bool:
        if run.index < len(run.tasks):
            return self._pod_step(wf, run, run.tasks[run.index], run.templates[run.tasks[run.index]])
        if run.on_exit and run.exit_node is None:
            run.exit_node = f"{wf['metadata']['name']}.onExit"
            self._start_node(wf, run, run.exit_node, run.on_exit, gated=False)
            return True
        if run.exit_node and not self._exit_done(wf, run):
            return False
        failed = any(n.get("phase") == "Failed" for n in run.nodes.values() if n["type"] == "Pod" and n["id"] != run.exit_node)
        return self._finish(wf, run, "Failed" if failed else "Succeeded", "child failed" if failed else None)

    def _pod_step(self, wf: dict[str, Any], run: _Run, task: str, template: str) -> bool:
        node_id = _node_id(wf["metadata"]["name"], task)
        node = run.nodes.get(node_id)
        if node is None:
            self._start_node(wf, run, task, template, gated=bool(self.behaviour.hold_queue))
            return True
        pod = self.sim.get("pods", wf["metadata"]["namespace"], node["podName"])
        if node["phase"] == "Pending":
            if pod is not None and pod["spec"].get("schedulingGates"):
                return False
            self._set_pod(wf, node, "Running")
            node.update(phase="Running", startedAt=now())
            run.started, run.lines = time.monotonic(), 0
            return True
        elapsed = time.monotonic() - run.started
        due = min(self.behaviour.log_lines, int(elapsed / self.behaviour.step_seconds * self.behaviour.log_lines) + 1)
        for line in range(run.lines, due):
            self.sim.append_log(wf["metadata"]["namespace"], node["podName"], f"{task}: line {line + 1}\n")
        run.lines = max(run.lines, due)
        if elapsed < self.behaviour.step_seconds:
            return False
        phase = "Failed" if task == self.behaviour.fail_step else "Succeeded"
        self._end_node(wf, node, phase, "Error (exit code 1)" if phase == "Failed" else None)
        run.index = len(run.tasks) if phase == "Failed" else run.index + 1
        return True

    def _start_node(self, wf: dict[str, Any], run: _Run, display: str, template: str, *, gated: bool) -> None:
        name, ns = wf["metadata"]["name"], wf["metadata"]["namespace"]
        node_id = _node_id(name, display)
        pod_name = f"{name}-{template}-{zlib.crc32(node_id.encode()) % 10**10}"
        labels = {**(wf["spec"].get("podMetadata") or {}).get("labels", {}), WORKFLOW_LABEL: name}
        spec: dict[str, Any] = {"containers": [{"name": "wait"}, {"name": "main"}]}
        if gated:
            labels["kueue.x-k8s.io/queue-name"] = str(self.behaviour.hold_queue)
            spec["schedulingGates"] = [{"name": KUEUE_GATE}]
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": spec, "status": {"phase": "Pending"},
               "metadata": {"name": pod_name, "labels": labels,
                            "annotations": {"workflows.argoproj.io/node-id": node_id, "workflows.argoproj.io/node-name": display}}}
        self.sim.put("pods", ns, pod, "ADDED")
        parent = run.nodes[_node_id(name, run.tasks[run.index - 1])] if 0 < run.index <= len(run.tasks) and display in run.tasks \
            else run.nodes[name]
        parent.setdefault("children", []).append(node_id)  # a task's children are the tasks that depend on it
        run.nodes[node_id] = {"id": node_id, "name": f"{name}.{display}", "displayName": display, "type": "Pod",
                              "templateName": template, "phase": "Pending", "boundaryID": name, "podName": pod_name}
        if display == run.exit_node:
            self._set_pod(wf, run.nodes[node_id], "Running")
            run.nodes[node_id].update(phase="Running", startedAt=now())
            run.started = time.monotonic()

    def _exit_done(self, wf: dict[str, Any], run: _Run) -> bool:
        node = run.nodes[_node_id(wf["metadata"]["name"], str(run.exit_node))]
        if node["phase"] != "Running":
            return True
        if time.monotonic() - run.started < self.behaviour.exit_seconds:
            return False
        self.sim.append_log(wf["metadata"]["namespace"], node["podName"], "exit handler: closed the parent run\n")
        self._end_node(wf, node, "Succeeded", None)
        return True

    def _shutdown(self, wf: dict[str, Any], run: _Run, strategy: str) -> bool:
        message = f"Stopped with strategy '{strategy}'"
        run.shutdown_seen = run.shutdown_seen or time.monotonic()
        if strategy == "Stop" and time.monotonic() - run.shutdown_seen < self.behaviour.stop_seconds:
            return False
        exit_id = _node_id(wf["metadata"]["name"], str(run.exit_node)) if run.exit_node else None
        for node in run.nodes.values():
            if node["type"] == "Pod" and node["phase"] in ("Pending", "Running") and (node["id"] != exit_id or strategy == "Terminate"):
                self._end_node(wf, node, "Failed", message)
        run.index = len(run.tasks)
        if strategy == "Stop" and run.on_exit:
            if run.exit_node is None:
                run.exit_node = f"{wf['metadata']['name']}.onExit"
                self._start_node(wf, run, run.exit_node, run.on_exit, gated=False)
                return True
            if not self._exit_done(wf, run):
                return False
        return self._finish(wf, run, "Failed", message)

    def _end_node(self, wf: dict[str, Any], node: dict[str, Any], phase: str, message: str | None) -> None:
        node.update(phase=phase, finishedAt=now(), **({"message": message} if message else {}))
        self._set_pod(wf, node, phase)
        if self.behaviour.pod_gc:
            self.sim.remove("pods", wf["metadata"]["namespace"], node["podName"])

    def _set_pod(self, wf: dict[str, Any], node: dict[str, Any], phase: str) -> None:
        pod = self.sim.get("pods", wf["metadata"]["namespace"], node["podName"])
        if pod is not None:
            self.sim.put("pods", wf["metadata"]["namespace"], {**pod, "status": {"phase": phase}})

    def _finish(self, wf: dict[str, Any], run: _Run, phase: str, message: str | None) -> bool:
        run.phase = phase
        run.nodes[wf["metadata"]["name"]].update(phase=phase, finishedAt=now())
        self._write(wf, run, phase=phase, finishedAt=now(), **({"message": message} if message else {}))
        return False

    def _write(self, wf: dict[str, Any], run: _Run, **fields: Any) -> None:
        current = self.sim.get("workflows", wf["metadata"]["namespace"], wf["metadata"]["name"]) or wf
        status = {k: v for k, v in (current.get("status") or {}).items() if k not in ("nodes", "compressedNodes")}
        status["phase"] = status.get("phase") or "Running"
        status.update(fields)
        b = self.behaviour
        if b.offload_nodes:
            status["offloadNodeStatusVersion"] = f"fnv:{zlib.crc32(json.dumps(run.nodes).encode())}"
        elif b.compress_nodes:
            status["compressedNodes"] = base64.b64encode(gzip.compress(json.dumps(run.nodes).encode())).decode()
        else:
            status["nodes"] = json.loads(json.dumps(run.nodes))
        self.sim.put("workflows", wf["metadata"]["namespace"], {**current, "status": status})


def _node_id(workflow: str, display: str) -> str:
    return f"{workflow}-{zlib.crc32(display.encode())}"


def _plan(wf: dict[str, Any]) -> _Run:
    spec = wf.get("spec", {})
    templates = {t["name"]: t for t in spec.get("templates", [])}
    dag = templates.get(spec.get("entrypoint", ""), {}).get("dag", {})
    tasks = [t["name"] for t in dag.get("tasks", [])]
    return _Run(tasks=tasks, templates={t["name"]: t["template"] for t in dag.get("tasks", [])}, on_exit=spec.get("onExit"))
