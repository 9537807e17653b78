"""The detached process behind one local run: interprets its manifest and keeps its record current.

Started by ``LocalExecutor.submit`` as ``python -m workflow_compiler.executors.local_worker``;
SIGTERM (cancel) stops the steps, which save their partial output, and the run ends KILLED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from ..mlflow_ui import mlflow_run_link
from ..private_files import open_private
from ..redaction import redact_logs
from ..runtime.files import read_json
from ..runtime.speedups import exit_now
from ..store import Progress, RunRecord, RunStore, StepState, nbscale_home, utcnow
from .interpreter import WorkflowInterpreter, expand_tasks

log = logging.getLogger(__name__)

_PHASE_TO_STATUS = {"Succeeded": "SUCCEEDED", "Failed": "FAILED", "Stopped": "KILLED", "Skipped": "KILLED", "Running": "RUNNING"}
#: Tasks the compiler adds around notebooks; they are not counted as steps.
_HELPER_TASKS = {"mlflow-parent"}


def _tracking_agent_env() -> dict[str, str]:
    """Start (or find) the warm tracking agent and point the steps at it; ``NBSCALE_TRACKING_AGENT=0`` opts out."""
    from ..tracking import agent
    from ..tracking_uri import tracking_uri

    path = agent.start_for(tracking_uri())  # without it the steps start their own MLflow helpers, as in a pod
    return {agent.ENV_SOCKET: str(path)} if path is not None else {}


class RunWorker:
    """Runs one record's workflow and writes its progress and outcome into the store."""

    def __init__(self, store: RunStore, run_id: str, root: Path) -> None:
        self.store = store
        self.record = store.get(run_id)
        self.run_dir = Path(self.record.run_dir)
        self.root = root
        manifest = json.loads((self.run_dir / "manifest.json").read_text(encoding="utf-8"))
        entry = next(t for t in manifest["spec"]["templates"] if t["name"] == manifest["spec"]["entrypoint"])
        tasks, _, _ = expand_tasks(entry.get("dag", {}).get("tasks", []))  # a fan-out's items are steps of their own
        self.step_names = [name for name in tasks if name not in _HELPER_TASKS]
        self.steps = {n: StepState(name=n) for n in self.step_names}
        self.lock = threading.Lock()
        self.log_file = os.fdopen(open_private(self.run_dir / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab", buffering=0)
        # A RayJob run here is the sweep driver: it keeps its state under the run's own id.
        env = {"NBSCALE_SWEEP_ID": self.record.id} if self.record.kind == "sweep" else _tracking_agent_env()
        self.sweep_dir = nbscale_home() / "sweeps" / self.record.id
        self.interpreter = WorkflowInterpreter(manifest, workflow_name=self.record.workflow_name, root=root, env=env,
                                               run_dir=self.run_dir, log_file=self.log_file, on_task=self.on_task)

    def on_task(self, name: str, phase: str, info: dict[str, Any]) -> None:
        """Interpreter hook: a task started or ended."""
        if name not in self.steps:
            return
        with self.lock:
            step = self.steps[name]
            step.status = _PHASE_TO_STATUS.get(phase, "FAILED")  # type: ignore[assignment]
            step.attempts = int(info.get("attempts") or info.get("attempt") or step.attempts)
            step.output_dir = info.get("output_dir", step.output_dir)
            if phase in ("Failed", "Stopped"):
                result = _step_result(step.output_dir)
                step.error = result.get("error") or info.get("message") or None
        self.publish()

    def publish(self, **fields: Any) -> RunRecord:
        """Write the steps and the derived progress into the record."""
        with self.lock:
            for step in self.steps.values():
                cells = read_json(_find(step.output_dir, "progress.json"))
                if cells:
                    step.progress = Progress(done=int(cells.get("cells_done", 0)), total=int(cells.get("cells_total", 0)))
            steps = [self.steps[n].model_copy() for n in self.step_names]
        sweep = read_json(self.sweep_dir / "progress.json") if self.record.kind == "sweep" else {}
        if sweep:
            from ..sweep_record import sweep_progress  # the sweep's models: loaded for sweeps only

            progress, best = sweep_progress(sweep)
            fields.setdefault("best", best)
        elif len(steps) == 1:
            progress = steps[0].progress
        else:
            progress = Progress(done=sum(s.status == "SUCCEEDED" for s in steps), total=len(steps), unit="steps",
                                running=sum(s.status == "RUNNING" for s in steps), failed=sum(s.status == "FAILED" for s in steps))
        return self.store.update(self.record.id, steps=steps, progress=progress, **fields)

    def run(self) -> RunRecord:
        """Interpret the workflow to the end and record the outcome."""
        return self.finish(self.interpret())

    def interpret(self) -> str:
        """Interpret the workflow to the end, publishing progress every half second; the final phase."""
        self.publish(status="RUNNING", started=utcnow())
        outcome: dict[str, str] = {}
        thread = threading.Thread(target=lambda: outcome.update(phase=self.interpreter.run()), name="workflow")
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            self.publish()
        return outcome.get("phase", "Failed")

    def finish(self, phase: str) -> RunRecord:
        """Gather the steps' results into the final record."""
        results = {n: _step_result(s.output_dir) for n, s in self.steps.items()}
        last = next((results[n] for n in reversed(self.step_names) if results[n]), {})
        status = _PHASE_TO_STATUS.get(phase, "FAILED")
        failed = next((s for s in self.steps.values() if s.status in ("FAILED", "KILLED") and s.error), None)
        parent = getattr(self.interpreter, "scope", {}).get("workflow.outputs.parameters.mlflow-parent-run-id")
        fields: dict[str, Any] = {
            "status": status,
            "finished": utcnow(),
            "metrics": last.get("metrics") or {},
            "mlflow_run_id": parent or last.get("mlflow_run_id"),
            "mlflow_experiment_id": last.get("experiment_id"),
            "links": _links(self.steps[self.step_names[-1]].output_dir if self.step_names else None, last, parent),
            "error": (f"step {failed.name}: {failed.error}" if failed and len(self.steps) > 1 else failed.error if failed else None)
            if status != "SUCCEEDED" else None,
        }
        if status == "KILLED" and not fields["error"]:
            fields["error"] = "cancelled"
        summary = read_json(self.sweep_dir / "result.json") if self.record.kind == "sweep" else {}
        if summary:
            from ..sweep_record import sweep_outcome

            fields.update(sweep_outcome(summary))
        return self.publish(**fields)


def _find(folder: str | None, name: str) -> Path | None:
    if not folder or not Path(folder).exists():
        return None
    return next(Path(folder).rglob(name), None)


def _step_result(folder: str | None) -> dict[str, Any]:
    return read_json(_find(folder, "result.json"))


def _links(folder: str | None, result: dict[str, Any], parent: str | None) -> dict[str, str]:
    links = {}
    for key, name in (("output_notebook", "output.ipynb"), ("html", "output.html")):
        found = _find(folder, name)
        if found:
            links[key] = str(found)
    run_id, experiment = parent or result.get("mlflow_run_id"), result.get("experiment_id")
    if run_id and experiment:
        links["mlflow"] = mlflow_run_link(experiment, run_id)
    return links


def _held(record: RunRecord) -> contextlib.AbstractContextManager[None]:
    """``quota.hold_lease`` for a run with a GPU lease; the quota client (and the spec models it imports, 0.15 s) loads only then."""
    if not record.lease_id:
        return contextlib.nullcontext()
    from ..quota import hold_lease

    return hold_lease(record.lease_id, gpus=record.lease_gpus)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    stopping = threading.Event()
    workers: list[RunWorker] = []

    def stop(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping the steps", signum)
        stopping.set()
        for worker in workers:
            threading.Thread(target=worker.interpreter.stop, name="stop").start()

    # first thing: a cancel that arrives while the worker is being built still ends the run KILLED
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    parser = argparse.ArgumentParser(prog="nbscale-local-worker")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    redact_logs()
    store = RunStore(args.store)
    queued = store.get(args.run_id)
    failure: Exception | None = None
    phase = "Failed"
    # the lease is released before the final status is written: a run reported done holds no GPU
    with _held(queued):
        try:
            workers.append(RunWorker(store, args.run_id, Path(args.root)))
            if stopping.is_set():
                workers[0].interpreter.stop()
            phase = workers[0].interpret()
        except Exception as exc:  # the record must never stay RUNNING: say why it failed
            log.exception("run %s failed in the worker", args.run_id)
            failure = exc
    if failure is None:
        try:
            record = workers[0].finish(phase)
        except Exception as exc:
            log.exception("run %s: could not record its outcome", args.run_id)
            failure = exc
    if failure is not None:
        store.update(args.run_id, status="FAILED", finished=utcnow(), error=f"local executor: {failure}")
        return 1
    log.info("run %s: %s", args.run_id, record.status)
    return 0 if record.status == "SUCCEEDED" else 1


if __name__ == "__main__":
    exit_now(main())  # the outcome is recorded; `nbscale run` waits for this exit
