"""Run a compiled Argo Workflow on this machine: the embedded default's engine.

It interprets exactly the subset of Argo that nbscale's compiler emits (see docs/DESIGN.md):
a DAG of container templates, parameters, output parameters read from files, retries,
``activeDeadlineSeconds`` (per step and for the workflow), ``withItems`` fan-out (one task per
item, ``{{item}}``/``{{item.KEY}}`` in the task's arguments, at most ``parallelism`` at once) and
the ``onExit`` handler. Containers become local processes with the same command and arguments,
started without a shell; volume mounts become folders. A ``resource`` template that creates a
KubeRay RayJob runs the job's entrypoint here (``rayjob_local.py``). Argo itself cannot run
without Kubernetes, and no library interprets its manifests, hence this module.
"""

from __future__ import annotations

import json
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
from .rayjob_local import job_status, local_job, resource_phase
from .step_parameters import parameters_through_file
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
        for key, value in (manifest.get("metadata", {}).get("labels") or {}).items():
            self.scope[f"workflow.labels.{key}"] = str(value)
        for p in self.spec.get("arguments", {}).get("parameters", []):
            self.scope[f"workflow.parameters.{p['name']}"] = str(p.get("value", ""))
        self._stopped = threading.Event()
        self._deadline_hit = threading.Event()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    # -- public -------------------------------------------------------------------------------
    def run(self) -> str:
        """Run the entrypoint, then the exit handler; returns Succeeded, Failed or Stopped."""
        deadline = self.spec.get("activeDeadlineSeconds")
        timer = threading.Timer(float(deadline), self._deadline_exceeded) if deadline else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            phase = self._run_template_tree(self.spec["entrypoint"])
        finally:
            if timer is not None:
                timer.cancel()
        if self._deadline_hit.is_set():
            phase = "Failed"  # as in Argo: a workflow past its deadline fails
        elif self._stopped.is_set():
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

    def _deadline_exceeded(self) -> None:
        self._log(f"workflow activeDeadlineSeconds={self.spec.get('activeDeadlineSeconds')} exceeded: stopping every step\n")
        self._deadline_hit.set()
        self.stop()

    # -- DAG ----------------------------------------------------------------------------------
    def _run_template_tree(self, name: str) -> str:
        template = self._template(name)
        if "dag" not in template:
            return self._run_task(name, {"template": name}, {}).phase
        tasks, deps, items = expand_tasks(template["dag"]["tasks"])
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
                    scope = self._task_scope(results)
                    if name in items:
                        scope.update(item_scope(items[name]))
                    running[pool.submit(self._run_task, name, task, scope)] = name
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
        if "container" not in template and "resource" not in template:
            raise ExecutionError(f"template {template['name']!r} is neither a container nor a resource; "
                                 "the local executor runs containers, RayJob resources and DAGs.")
        task_scope = dict(scope or self.scope)
        arguments = substitute_all(task.get("arguments", {}).get("parameters", []), task_scope)
        # {{item...}} belongs to the task's fields only; the template sees its inputs, as in Argo.
        scope = {k: v for k, v in task_scope.items() if k != "item" and not k.startswith("item.")}
        for arg in arguments:
            scope[f"inputs.parameters.{arg['name']}"] = str(arg.get("value", ""))
        for declared in template.get("inputs", {}).get("parameters", []):
            key = f"inputs.parameters.{declared['name']}"
            if key not in scope and "value" in declared:
                scope[key] = str(declared["value"])
        resolved = substitute_all(template, scope)
        limit = int(resolved.get("retryStrategy", {}).get("limit", 0) or 0)
        output_dir = self.run_dir / "steps" / _safe(name)
        result = TaskResult("Failed", output_dir=output_dir)
        runner = self._run_container if "container" in resolved else self._run_resource
        for attempt in range(limit + 1):
            if self._stopped.is_set():
                return TaskResult("Stopped", attempts=attempt, output_dir=output_dir)
            self.on_task(name, "Running", {"attempt": attempt + 1, "output_dir": str(output_dir)})
            result = runner(name, resolved, output_dir, attempt)
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
        volumes = [*self.spec.get("volumes", []), *template.get("volumes", [])]
        mounts = self._mounts(volumes, container.get("volumeMounts", []), output_dir)
        env = {e["name"]: _map_path(str(e.get("value", "")), mounts) for e in container.get("env", []) if "value" in e}
        command = parameters_through_file([*container.get("command", []), *container.get("args", [])], output_dir)
        code, timed_out, elapsed = self._run_process(name, command, mounts, container.get("workingDir"), env, template, attempt)
        outputs = self._output_parameters(template, mounts)
        deadline = template.get("activeDeadlineSeconds")
        if timed_out:
            return TaskResult("Failed", outputs, message=f"stopped after activeDeadlineSeconds={deadline} ({elapsed:.0f}s)")
        if self._stopped.is_set():
            return TaskResult("Stopped", outputs, message="cancelled")
        if code != 0:
            return TaskResult("Failed", outputs, message=f"exit code {code}")
        return TaskResult("Succeeded", outputs)

    def _run_resource(self, name: str, template: dict[str, Any], output_dir: Path, attempt: int) -> TaskResult:
        """A RayJob: its entrypoint as a local process; the exit code as Ray's job status, judged by the conditions."""
        job = local_job(template["resource"])
        mounts = self._mounts(job.volumes, job.volume_mounts, output_dir)
        code, timed_out, elapsed = self._run_process(name, job.argv, mounts, job.working_dir, job.env, template, attempt)
        if timed_out:
            return TaskResult("Failed", message=f"stopped after activeDeadlineSeconds={template.get('activeDeadlineSeconds')} ({elapsed:.0f}s)")
        stopped = self._stopped.is_set()
        phase, message = resource_phase(template["resource"], {"status": job_status(code, stopped)})
        if stopped:
            return TaskResult("Stopped", message="cancelled")
        return TaskResult(phase, message=message or (f"exit code {code}" if code else ""))

    def _run_process(self, name: str, command: list[str], mounts: list[tuple[str, Path]], working_dir: str | None,
                     env: dict[str, str], template: dict[str, Any], attempt: int) -> tuple[int | None, bool, float]:
        """Run one step's process (no shell) to its end; (exit code, stopped by the deadline, seconds)."""
        argv = [_map_path(a, mounts) for a in command]
        if not argv:
            raise ExecutionError(f"template {template['name']!r} has no command.")
        argv[0] = _executable(argv[0])
        cwd = Path(_map_path(working_dir, mounts)) if working_dir else self.root
        deadline = template.get("activeDeadlineSeconds")
        self._log(f"[{name}] attempt {attempt + 1}: {' '.join(argv[:3])} ...\n")
        started = time.monotonic()
        # Checked and registered under the lock that stop() takes after setting the flag: a stop that
        # lands while this step is starting either prevents the start or finds the process to end.
        with self._lock:
            if self._stopped.is_set():
                return None, False, 0.0
            proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env, **self.env}, stdout=self.log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            self._procs.add(proc)
        try:
            timed_out = self._wait(proc, float(deadline) if deadline else None)
        finally:
            with self._lock:
                self._procs.discard(proc)
        return proc.returncode, timed_out, time.monotonic() - started

    def _wait(self, proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
        try:
            proc.wait(timeout=deadline)
            return False
        except subprocess.TimeoutExpired:
            _terminate(proc)
            return True

    def _mounts(self, volume_list: list[dict[str, Any]], volume_mounts: list[dict[str, Any]], output_dir: Path) -> list[tuple[str, Path]]:
        """(mountPath, local folder) pairs: PVCs are the workspace root, emptyDirs are fresh folders."""
        volumes = {v["name"]: v for v in volume_list}
        mounts: list[tuple[str, Path]] = []
        for mount in volume_mounts:
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


def expand_tasks(dag_tasks: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]], dict[str, Any]]:
    """DAG tasks with ``withItems`` expanded to one task per item, ``name(0)``, ``name(1)``, ...

    Returns (task by name, dependencies by name, item by name). A task that depends on an expanded
    one waits for all its items. ``withParam`` and ``withSequence`` are refused.
    """
    tasks: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    items: dict[str, Any] = {}
    for task in dag_tasks:
        loops = [key for key in ("withParam", "withSequence") if key in task]
        if loops:
            raise ExecutionError(f"task {task['name']!r}: the local executor expands withItems, not {loops[0]}.")
        if "withItems" not in task:
            tasks[task["name"]] = task
            continue
        names = groups.setdefault(task["name"], [])
        for index, item in enumerate(task["withItems"]):
            names.append(f"{task['name']}({index})")
            tasks[names[-1]], items[names[-1]] = task, item
    deps = {name: [d for dep in _dependencies(task) for d in groups.get(dep, [dep])] for name, task in tasks.items()}
    return tasks, deps, items


def item_scope(item: Any) -> dict[str, str]:
    """``{{item}}`` and, for a map, ``{{item.KEY}}``: strings as they are, anything else as JSON (as Argo does)."""
    scope = {"item": _item_text(item)}
    if isinstance(item, dict):
        scope.update({f"item.{key}": _item_text(value) for key, value in item.items()})
    return scope


def _item_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
