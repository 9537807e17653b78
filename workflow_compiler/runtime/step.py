"""``nbscale-step run``: one notebook execution, from parameters to a closed MLflow run and result.json."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NbscaleError, NotebookError, SpecError
from ..paths import resolve_notebook_path
from ..stepconfig import StepConfig
from ..tracking.step_tracker import TrackerProcess, TrackingError
from ..tracking_uri import tracking_uri
from .files import ProgressFile, write_json
from .handoff import HANDOFF_FILE
from .interrupts import InterruptGuard, StepInterrupted
from .kernel import StepKernelManager, python_kernel_manager, start_python_kernel, stop_kernel
from .outcome import StepOutcome, failed, killed
from .render import preload, render_html

log = logging.getLogger(__name__)

#: Seconds a thread may hold the GIL while another waits for it (Python's default is 0.005).
_SWITCH_INTERVAL = 0.0005
OUTPUT_NOTEBOOK = "output.ipynb"
OUTPUT_HTML = "output.html"


@dataclass
class StepRequest:
    """What ``run`` was asked to do."""

    config: StepConfig
    output_dir: Path
    parameters: dict[str, Any]
    parent_run_id: str | None = None


@dataclass
class StepResult:
    """What ``run`` did; ``to_json()`` is result.json."""

    outcome: StepOutcome
    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    metrics: dict[str, float] | None = None
    html: bool = False
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The result.json document the executors read."""
        return {
            "status": self.outcome.status, "mlflow_status": self.outcome.mlflow_status,
            "mlflow_run_id": self.mlflow_run_id, "experiment_id": self.experiment_id,
            "error": self.outcome.reason if self.outcome.status != "SUCCEEDED" else None,
            "error_detail": self.outcome.error_detail(), "metrics": self.metrics or {},
            "outputs": {"notebook": OUTPUT_NOTEBOOK, "html": OUTPUT_HTML if self.html else None},
            "exit_code": self.outcome.exit_code, "duration_seconds": round(self.duration, 3),
        }


class StepRunner:
    """Runs one request; ``run()`` never raises for the notebook's own failures.

    ``tracker``: the MLflow helper (or agent connection) when the caller started it already; it is
    closed at the end of ``run()`` either way.
    """

    def __init__(self, request: StepRequest, root: Path, *, tracker: TrackerProcess | None = None) -> None:
        self.request = request
        self.root = root
        self.out = request.output_dir
        self.progress = ProgressFile(self.out / "progress.json")
        self.tracker = tracker
        self.kernel: StepKernelManager | None = None
        self._preload: threading.Thread | None = None
        self._render: threading.Thread | None = None
        self._html_error: str | None = None
        self._run_lock = threading.Lock()
        self._run_error: Exception | None = None
        self.result = StepResult(outcome=failed("not started"))

    def run(self) -> StepResult:
        """Execute, track, write result.json; the guard turns signals into a KILLED outcome."""
        started = time.monotonic()
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress.write(status="PENDING")
        guard = InterruptGuard(self.request.config.timeout_seconds)
        try:
            with guard:
                self.result.outcome = self._execute(guard)
                guard.disarm()
                self._finish()
        except StepInterrupted as exc:  # before the kernel ran, or while the run was being opened
            self.result.outcome = killed(exc.reason, exc.exit_code)
            self._abort()
        except NbscaleError as exc:  # bad notebook path or parameters: nothing ran
            self.result.outcome = failed(exc.message)
            self.result.outcome.exit_code = 2 if isinstance(exc, (NotebookError, SpecError)) else 1
            self._abort()
        except TrackingError as exc:
            self.result.outcome = failed(f"MLflow: {exc}")
            self._abort()
        finally:
            guard.restore()
            if self.kernel is not None:  # papermill's client shut it down, unless the step stopped before it took it
                stop_kernel(self.kernel)
            if self.tracker is not None:
                self.tracker.close()
        self.result.duration = time.monotonic() - started
        self.progress.write(status=self.result.outcome.status)
        write_json(self.out / "result.json", self.result.to_json())
        return self.result

    def _execute(self, guard: InterruptGuard) -> StepOutcome:
        config = self.request.config
        notebook, relative = resolve_notebook_path(config.notebook, self.root)
        if self.tracker is None:
            self.tracker = TrackerProcess(tracking_uri())  # imports mlflow on the other core meanwhile
        from .parameters import check_parameters, params_for_mlflow

        values, effective = check_parameters(self.request.parameters, notebook)
        launch_env = {"MLFLOW_TRACKING_URI": self.tracker.uri}
        self.kernel = python_kernel_manager(config.kernel, folder=self.out)
        if self.kernel is not None and self.tracker.ready:  # it starts while this process imports papermill (kernel.py)
            start_python_kernel(self.kernel, cwd=notebook.parent, env={**os.environ, **launch_env})
        from .execute import (
            execute_notebook,  # papermill: the heavy import, overlapped with the helper's and the kernel's start
        )
        from .provenance import git_commit, run_tags, sha256_of

        tags = run_tags(config, notebook=relative, sha256=sha256_of(notebook), commit=git_commit(notebook.parent))
        self.tracker.send("open", experiment=config.experiment, run_name=config.step or notebook.stem, tags=tags,
                          params=params_for_mlflow(effective), parent_run_id=self.request.parent_run_id)
        if config.html:  # import nbconvert while this process waits for the kernel and the MLflow run
            # this thread mostly waits on the kernel's messages: with the CPU-bound preload beside it, each
            # wake-up would wait up to 5 ms (the default) for the GIL; measured: the cells' phase 2-3x longer
            sys.setswitchinterval(_SWITCH_INTERVAL)
            self._preload = threading.Thread(target=preload, kwargs={"render": self.tracker.ready}, name="preload-nbconvert", daemon=True)
            self._preload.start()
        outcome = execute_notebook(notebook, self.out / OUTPUT_NOTEBOOK, values, kernel_name=config.kernel,
                                   launch_env=launch_env, run_env=self._run_env, progress=self.progress, guard=guard,
                                   handoff=self.out / HANDOFF_FILE, kernel=self.kernel)
        if config.html and (self.out / OUTPUT_NOTEBOOK).is_file():  # render while the helper may still be creating the run
            self._render = threading.Thread(target=self._render_html, name="render-html", daemon=True)
            self._render.start()
        self._run_env()  # the kernel may never have asked (it did not start): the run exists all the same
        log.info("notebook %s: %s", outcome.status, outcome.reason or "all cells ran")
        return outcome

    def _render_html(self) -> None:
        """The HTML copy of the output notebook; a failure is kept for the run's tags."""
        if self._preload is not None:
            self._preload.join()
        try:
            render_html(self.out / OUTPUT_NOTEBOOK, self.out / OUTPUT_HTML)
            self.result.html = True
        except Exception as exc:  # noqa: BLE001 - a broken HTML copy must not hide the run's own outcome
            self._html_error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("could not render %s as HTML: %s", self.out / OUTPUT_NOTEBOOK, self._html_error)

    def _run_env(self) -> dict[str, str]:
        """The MLflow run for the kernel's environment; waits for the helper to have created it."""
        with self._run_lock:  # asked by the kernel hand-off thread and by the main thread
            if self._run_error is not None:  # the helper answers once: later callers get the same failure
                raise self._run_error
            try:
                return self._opened_run_env()
            except Exception as exc:
                self._run_error = exc
                raise

    def _opened_run_env(self) -> dict[str, str]:
        if self.result.mlflow_run_id is None:
            assert self.tracker is not None
            opened = self.tracker.receive()
            self.result.mlflow_run_id, self.result.experiment_id = opened["run_id"], opened["experiment_id"]
            log.info("MLflow run %s (experiment %s) in %s", opened["run_id"], opened["experiment_id"], self.tracker.uri)
        assert self.result.experiment_id is not None
        return {"MLFLOW_RUN_ID": self.result.mlflow_run_id, "MLFLOW_EXPERIMENT_ID": self.result.experiment_id}

    def _finish(self) -> None:
        assert self.tracker is not None
        outcome = self.result.outcome
        notebook, html = self.out / OUTPUT_NOTEBOOK, self.out / OUTPUT_HTML
        started = time.monotonic()
        tags = outcome.tags()
        if self._render is not None:
            self._render.join()
        if self._html_error is not None:
            tags["nbscale.html_error"] = self._html_error
        files = [str(p) for p in (notebook, html) if p.is_file() and (p == notebook or self.result.html)]
        try:
            answer = self.tracker.request("finish", status=outcome.mlflow_status, tags=tags, artifacts=files)
        except TrackingError as exc:
            if outcome.status == "SUCCEEDED":
                self.result.outcome = failed(f"the notebook ran, but MLflow logging failed: {exc}")
            else:
                log.error("MLflow logging failed: %s", exc)
            return
        log.info("HTML and MLflow logging took %.1f s", time.monotonic() - started)
        self.result.metrics = answer.get("metrics") or {}

    def _abort(self) -> None:
        if self.tracker is None or not self.tracker.asked_to_open:
            return
        try:
            self.tracker.request("abort", outcome=self.result.outcome.status, reason=self.result.outcome.reason or "")
        except TrackingError as exc:
            if self.result.mlflow_run_id is not None:
                log.error("could not close MLflow run %s: %s", self.result.mlflow_run_id, exc)
