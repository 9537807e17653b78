"""Run a compiled Argo Workflow on this machine: the embedded default's engine.

It interprets exactly the subset of Argo that nbscale's compiler emits (see docs/DESIGN.md):
a DAG of container templates, parameters, output parameters read from files, retries,
``activeDeadlineSeconds`` and the ``onExit`` handler. Containers become local processes with the
same command and arguments, started without a shell; volume mounts become folders. Argo itself
cannot run without Kubernetes, and no library interprets its manifests, hence this module.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExecutionError
from .templating import substitute_all

log = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL when a step is stopped, like a pod's grace period.
GRACE_SECONDS = 10.0

TaskHook = Callable[[str, str, dict[str, Any]], None]


@dataclass
class TaskResult:
    """How one DAG task ended."""

    phase: str  # Succeeded | Failed | Skipped | Stopped
    outputs: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    message: str = ""
    output_dir: Path | None = None


class WorkflowInterpreter:
    """Interprets one Workflow manifest. ``stop()`` (from another thread) cancels it."""

    def __init__(self, manifest: dict[str, Any], *, workflow_name: str, root: Path, run_dir: Path,
                 env: dict[str, str] | None = None, log_file: Any = None, on_task: TaskHook | None = None) -> None:
        self.manifest = manifest
        self.spec = manifest["spec"]
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        self.root = root
        self.run_dir = run_dir
        self.env = env or {}
        self.log_file = log_file or sys.stdout
        self.on_task = on_task or (lambda name, phase, info: None)
        self.workflow_name = workflow_name
        self.scope: dict[str, str] = {"workflow.name": workflow_name, "workflow.namespace": "local"}
        for p in self.spec.get("arguments", {}).get("parameters", []):
            self.scope[f"workflow.parameters.{p['name']}"] = str(p.get("value", ""))
        self._stopped = threading.Event()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------
    def run(self) -> str:
        """Run the entrypoint, then the exit handler; returns Succeeded, Failed or Stopped."""
        phase = self._run_template_tree(self.spec["entrypoint"])
        if self._stopped.is_set():
            phase = "Stopped"
        exit_handler = self.spec.get("onExit")
        if exit_handler:
            self.scope["workflow.status"] = {"Stopped": "Failed"}.get(phase, phase)
            self._stopped.clear()  # the exit handler runs even after a stop, as in Argo
            self._run_task(f"{self.spec['entrypoint']}.onExit", {"template": exit_handler}, {})
        return phase

    def stop(self) -> None:
        """Stop running steps (SIGTERM, then SIGKILL after the grace period) and start no more."""
        self._stopped.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _terminate(proc)

    # -- DAG ----------------------------------------------------------------------------------
    def _run_template_tree(self, name: str) -> str:
        template = self._template(name)
        if "dag" not in template:
            return self._run_task(name, {"template": name}, {}).phase
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        deps = {n: _dependencies(t) for n, t in tasks.items()}
        results: dict[str, TaskResult] = {}
        running: dict[Future[TaskResult], str] = {}
        workers = int(template.get("parallelism") or self.spec.get("parallelism") or max(1, len(tasks)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task") as pool:
            while len(results) < len(tasks):
                for name, task in tasks.items():
                    if name in results or name in running.values():
                        continue
                    if any(d not in results for d in deps[name]):
                        continue
                    if self._stopped.is_set() or any(results[d].phase != "Succeeded" for d in deps[name]):
                        results[name] = TaskResult("Skipped", message="an upstream step did not succeed")
                        self.on_task(name, "Skipped", {})
                        continue
                    running[pool.submit(self._run_task, name, task, self._task_scope(results))] = name
                if not running:
                    if len(results) < len(tasks):  # only possible with a dependency on an unknown task
                        raise ExecutionError(f"DAG {name!r} has tasks that can never start: {sorted(set(tasks) - set(results))}")
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    results[running.pop(future)] = future.result()
        self.results = results
        return "Succeeded" if all(r.phase == "Succeeded" for r in results.values()) else "Failed"

    def _task_scope(self, results: dict[str, TaskResult]) -> dict[str, str]:
        scope = dict(self.scope)
        for task, result in results.items():
            for key, value in result.outputs.items():
                scope[f"tasks.{task}.outputs.parameters.{key}"] = value
            scope[f"tasks.{task}.status"] = result.phase
        return scope

    # -- one task -----------------------------------------------------------------------------
    def _run_task(self, name: str, task: dict[str, Any], scope: dict[str, str]) -> TaskResult:
        template = self._template(task["template"])
        if "container" not in template:
            raise ExecutionError(f"template {template['name']!r} is not a container; the local executor runs containers and DAGs.")
        scope = dict(scope or self.scope)
        for arg in substitute_all(task.get("arguments", {}).get("parameters", []), scope):
            scope[f"inputs.parameters.{arg['name']}"] = str(arg.get("value", ""))
        for declared in template.get("inputs", {}).get("parameters", []):
            key = f"inputs.parameters.{declared['name']}"
            if key not in scope and "value" in declared:
                scope[key] = str(declared["value"])
        resolved = substitute_all(template, scope)
        limit = int(resolved.get("retryStrategy", {}).get("limit", 0) or 0)
        output_dir = self.run_dir / "steps" / _safe(name)
        result = TaskResult("Failed", output_dir=output_dir)
        for attempt in range(limit + 1):
            if self._stopped.is_set():
                return TaskResult("Stopped", attempts=attempt, output_dir=output_dir)
            self.on_task(name, "Running", {"attempt": attempt + 1, "output_dir": str(output_dir)})
            result = self._run_container(name, resolved, output_dir, attempt)
            result.attempts = attempt + 1
            if result.phase != "Failed":
                break
        self.on_task(name, result.phase, {"message": result.message, "attempts": result.attempts, "output_dir": str(output_dir)})
        for p in resolved.get("outputs", {}).get("parameters", []):
            if p.get("globalName") and p["name"] in result.outputs:
                self.scope[f"workflow.outputs.parameters.{p['globalName']}"] = result.outputs[p["name"]]
        return result

    def _run_container(self, name: str, template: dict[str, Any], output_dir: Path, attempt: int) -> TaskResult:
        container = template["container"]
        mounts = self._mounts(template, output_dir)
        argv = [_map_path(a, mounts) for a in [*container.get("command", []), *container.get("args", [])]]
        if not argv:
            raise ExecutionError(f"template {template['name']!r} has no command.")
        argv[0] = _executable(argv[0])
        cwd = Path(_map_path(container.get("workingDir", "/"), mounts)) if container.get("workingDir") else self.root
        env = {**os.environ, **{e["name"]: _map_path(str(e.get("value", "")), mounts) for e in container.get("env", []) if "value" in e}, **self.env}
        deadline = template.get("activeDeadlineSeconds")
        self._log(f"[{name}] attempt {attempt + 1}: {' '.join(argv[:3])} ...\n")
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        with self._lock:
            self._procs.add(proc)
        try:
            timed_out = self._wait(proc, float(deadline) if deadline else None)
        finally:
            with self._lock:
                self._procs.discard(proc)
        elapsed = time.monotonic() - started
        outputs = self._output_parameters(template, mounts)
        if timed_out:
            return TaskResult("Failed", outputs, message=f"stopped after activeDeadlineSeconds={deadline} ({elapsed:.0f}s)")
        if self._stopped.is_set():
            return TaskResult("Stopped", outputs, message="cancelled")
        if proc.returncode != 0:
            return TaskResult("Failed", outputs, message=f"exit code {proc.returncode}")
        return TaskResult("Succeeded", outputs)

    def _wait(self, proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
        try:
            proc.wait(timeout=deadline)
            return False
        except subprocess.TimeoutExpired:
            _terminate(proc)
            return True

    def _mounts(self, template: dict[str, Any], output_dir: Path) -> list[tuple[str, Path]]:
        """(mountPath, local folder) pairs: PVCs are the workspace root, emptyDirs are fresh folders."""
        volumes = {v["name"]: v for v in [*self.spec.get("volumes", []), *template.get("volumes", [])]}
        mounts: list[tuple[str, Path]] = []
        for mount in template["container"].get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "emptyDir" in volume:
                local = output_dir / mount["name"]
                local.mkdir(parents=True, exist_ok=True)
            else:
                local = self.root
            mounts.append((mount["mountPath"].rstrip("/"), local))
        return sorted(mounts, key=lambda m: -len(m[0]))

    def _output_parameters(self, template: dict[str, Any], mounts: list[tuple[str, Path]]) -> dict[str, str]:
        values = {}
        for p in template.get("outputs", {}).get("parameters", []):
            path = p.get("valueFrom", {}).get("path")
            if path:
                local = Path(_map_path(path, mounts))
                if local.is_file():
                    values[p["name"]] = local.read_text(encoding="utf-8").strip()
        return values

    def _template(self, name: str) -> dict[str, Any]:
        if name not in self.templates:
            raise ExecutionError(f"the manifest has no template {name!r}.")
        return self.templates[name]

    def _log(self, text: str) -> None:
        binary = "b" in getattr(self.log_file, "mode", "")
        self.log_file.write(text.encode() if binary else text)  # type: ignore[arg-type]
        self.log_file.flush()


def _dependencies(task: dict[str, Any]) -> list[str]:
    """Task names from ``dependencies`` or a ``depends`` of the form ``a && b.Succeeded``."""
    if "dependencies" in task:
        return list(task["dependencies"])
    depends = task.get("depends", "")
    names = [part.strip().split(".")[0] for part in depends.split("&&") if part.strip()]
    if any(c in depends for c in "|!()"):
        raise ExecutionError(f"task {task['name']!r}: the local executor supports 'depends' with '&&' only.")
    return names


def _map_path(text: str, mounts: list[tuple[str, Path]]) -> str:
    """Rewrite a container path under a mount to the local folder behind it."""
    for mount_path, local in mounts:
        if text == mount_path or text.startswith(mount_path + "/"):
            return str(local) + text[len(mount_path):]
    return text


def _executable(command: str) -> str:
    """Find a command next to this interpreter first (the venv), then on PATH."""
    beside = Path(sys.executable).parent / command
    if beside.exists():
        return str(beside)
    found = shutil.which(command)
    if not found:
        raise ExecutionError(f"{command!r} is not installed here; the local executor runs step commands on this machine.")
    return found


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's process group, then SIGKILL it after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
