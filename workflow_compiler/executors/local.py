"""The embedded default: run compiled workflows as local processes, detached from the caller."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ExecutionError
from ..private_files import FOLDER_MODE, PRIVATE_UMASK, append_private, private_folder, write_private
from ..store import RunRecord, nbscale_home, pid_alive, process_start, utcnow, wait_until
from ..tracking_uri import credentials_out_of_uri, tracking_uri, without_telemetry
from .base import Executor

log = logging.getLogger(__name__)

#: How often a cancel looks whether a worker it did not start has stopped (its own wake it at once).
CANCEL_LOOK = 0.2


class LocalExecutor(Executor):
    """Runs each workflow in a detached worker process that outlives the caller.

    Options: ``root`` (the folder the workspace volume maps to; default the current directory).
    """

    name = "local"

    @property
    def root(self) -> Path:
        """The workspace root: notebooks' paths in the manifest are relative to it."""
        return Path(self.options.get("root") or os.getcwd()).resolve()

    def prepare(self, record: RunRecord) -> None:
        """Start the warm tracking agent (when the run's steps will use it) in the background.

        A first run of a session otherwise starts it only in its worker, after compiling: started
        here, its ``import mlflow`` (2-4 s) overlaps the compile, on the other core.
        """
        if record.kind == "sweep":  # the sweep driver starts what it uses
            return
        threading.Thread(target=_start_tracking_agent, name="start-tracking-agent", daemon=True).start()

    def submit(self, manifest: dict[str, Any], *, record: RunRecord) -> RunRecord:
        """Write the manifest into the run's folder and start a worker for it."""
        from ..compiler.naming import LABEL_RUN_ID  # the compiler loads for submits only, not for status

        check_local_manifest(manifest)  # refused here, before any record or worker exists
        run_dir = private_folder(nbscale_home() / "runs") / record.id
        run_dir.mkdir(mode=FOLDER_MODE)
        metadata = {**manifest["metadata"], "labels": {**manifest["metadata"].get("labels", {}), LABEL_RUN_ID: record.id}}
        manifest = {**manifest, "metadata": metadata}  # labelled as the argo executor labels its Workflows
        prefix = manifest["metadata"].get("generateName") or manifest["metadata"].get("name", "nbscale-")
        workflow_name = prefix + record.id.removeprefix("nbs-") if prefix.endswith("-") else prefix
        write_private(run_dir / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
        record = record.model_copy(update={"executor": self.name, "run_dir": str(run_dir), "workflow_name": workflow_name})
        self.store.create(record)
        env = without_telemetry(credentials_out_of_uri({**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(),
                                                        "NBSCALE_HOME": str(nbscale_home()), "PYTHONUNBUFFERED": "1"}))
        argv = [sys.executable, "-m", "workflow_compiler.executors.local_worker", "--run-id", record.id,
                "--store", str(self.store.path), "--root", str(self.root)]
        # PRIVATE_UMASK: what the worker, its steps, their kernels and MLflow create under the home is the user's alone
        with append_private(run_dir / "log.txt") as log_file:
            proc = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True, umask=PRIVATE_UMASK)
        log.info("run %s: worker pid %s in %s", record.id, proc.pid, run_dir)
        self.__dict__.setdefault("_exits", {})[record.id] = _reap_later(proc)
        return self.store.update(record.id, pid=proc.pid, pid_start=process_start(proc.pid))

    def pause(self, run_id: str, seconds: float) -> None:
        """Until ``seconds`` pass, or at once when a worker this executor started exits: it records the run's end
        just before (``wait``, ``updates`` and so ``nbscale run`` wake on that rather than on their next look)."""
        exited = self.__dict__.get("_exits", {}).get(run_id)
        if exited is None or exited.is_set():  # not ours, or ended: the next look is the last (or reports it lost)
            time.sleep(seconds)
        else:
            exited.wait(seconds)

    def get(self, run_id: str) -> RunRecord:
        """The record; a run whose worker died without a word is marked FAILED (lost)."""
        record = self.store.get(run_id)
        if not record.done and record.pid and not pid_alive(record.pid, record.pid_start):
            record = self._end_orphan(record, "FAILED", f"lost: its worker (pid {record.pid}) is gone without recording a result")
        return record

    def cancel(self, run_id: str, *, wait: float = 60.0) -> RunRecord:
        """SIGTERM the worker, which stops its steps (they save partial output) and records KILLED.

        Waits up to ``wait`` seconds for the KILLED record; a caller that must answer quickly (an
        HTTP request) passes a short wait and gets the record as it stands, still stopping.
        """
        record = self.store.get(run_id)
        if record.done:
            return record
        if record.pid and pid_alive(record.pid, record.pid_start):  # a reused pid names another process: left alone
            try:
                os.kill(record.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            pid, started = record.pid, record.pid_start
            wait_until(lambda: self.store.get(run_id).done or not pid_alive(pid, started), timeout=wait, interval=CANCEL_LOOK,
                       sleep=lambda seconds: self.pause(run_id, seconds))
            record = self.store.get(run_id)
            if record.done or pid_alive(pid, started):  # still alive after the grace period: not ours to call KILLED
                return record
        elif record.pid:
            return self._end_orphan(record, "KILLED", f"cancelled: its worker (pid {record.pid}) was already gone, nothing was signalled")
        # stopped before it could record anything (e.g. still starting up)
        return self._end_orphan(record, "KILLED", "cancelled")

    def stop_hint(self, record: RunRecord) -> str:
        """A worker that outlived the grace period: check again, or kill it."""
        return f"Check again with `nbscale status {record.id}`, or end it with `kill -9 {record.pid}`."

    def _end_orphan(self, record: RunRecord, status: str, error: str) -> RunRecord:
        """Record the end of a run whose worker is gone, and give its GPU lease back now, not at expiry; a run whose worker
        recorded its own end meanwhile (it may have exited just after the caller looked) keeps that end."""
        latest = self.store.get(record.id)
        if latest.done:
            return latest
        record = self.store.update(record.id, status=status, finished=utcnow(), error=error)
        if record.lease_id:
            from .. import quota  # imports the spec models: only a leased run's end pays

            held = (datetime.now(UTC) - datetime.fromisoformat(record.created)).total_seconds()
            quota.release(record.lease_id, record.lease_gpus * max(0.0, held))
        return record

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        """Bytes of the run's log from ``offset``."""
        record = self.store.get(run_id)
        path = Path(record.run_dir) / "log.txt"
        if not path.exists() or offset >= path.stat().st_size:  # past the end: nothing yet (seek would refuse huge offsets)
            return "", offset
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        if not data:
            return "", offset
        return data.decode("utf-8", errors="replace"), offset + len(data)


def _reap_later(proc: subprocess.Popen[bytes]) -> threading.Event:
    """Collect the worker's exit status in the background, so a long-lived caller leaves no zombie; the event is set then."""
    exited = threading.Event()

    def reap() -> None:
        proc.wait()
        exited.set()

    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()
    return exited


def _start_tracking_agent() -> None:
    """``agent.start_for`` the default store, from a background thread: a failure is the worker's to report."""
    from ..tracking import agent

    try:
        agent.start_for(tracking_uri())
    except Exception as exc:  # noqa: BLE001 - the worker starts it again and says why it cannot
        log.debug("tracking agent not started ahead: %s", exc)


def check_local_manifest(manifest: dict[str, Any]) -> None:
    """Refuse a manifest the local executor cannot run, before a worker starts.

    It runs DAGs (``withItems`` included), containers, and ``resource`` templates that create a
    KubeRay RayJob (their entrypoint runs here); ``local_job`` says why any other resource is refused.
    """
    from .interpreter import expand_tasks
    from .rayjob_local import local_job

    templates = manifest.get("spec", {}).get("templates", [])
    kinds = {k for t in templates for k in ("container", "dag", "resource", "script", "steps") if k in t}
    unsupported = kinds - {"container", "dag", "resource"}
    if unsupported:
        raise ExecutionError(f"the local executor does not run {', '.join(sorted(unsupported))} templates yet.")
    for template in templates:
        if "resource" in template:
            local_job(_masked(template["resource"]))
        if "dag" in template:
            expand_tasks(template["dag"].get("tasks", []))


def _masked(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with its ``{{...}}`` expressions blanked: they are substituted only when the step runs."""
    import re

    manifest = re.sub(r"\{\{.*?\}\}", "x", str(resource.get("manifest", "")), flags=re.DOTALL)
    return {**resource, "manifest": manifest}
