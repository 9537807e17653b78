"""A helper process that owns the step's MLflow run while the main process runs the notebook.

Why a process: ``import mlflow`` (2-4 s here) and the run's creation can then use the second core
while the main process imports papermill and the kernel starts, instead of adding their time to
every step. It also ends the run when the main process dies without a word.

Protocol: one JSON object per line. The main process writes requests to the helper's stdin
(``open``, ``finish``, ``abort``); the helper answers each on its own stdout with ``{"ok": true, ...}``
or ``{"ok": false, "error": "..."}``. The helper ignores SIGTERM/SIGINT (the executor signals the
whole process group): the main process decides how the run ends.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class TrackingError(Exception):
    """MLflow could not be reached or refused a request; the message says which and why."""


class TrackerProcess:
    """The main process's handle on the helper."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self._proc = subprocess.Popen([sys.executable, "-m", "workflow_compiler.runtime.tracker"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self._asked_to_open = False

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        self.send(op, **fields)
        return self.receive()

    def send(self, op: str, **fields: Any) -> None:
        """Send one request; ``receive()`` reads its answer."""
        assert self._proc.stdin is not None
        self._asked_to_open = self._asked_to_open or op == "open"
        try:
            self._proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise TrackingError(f"the MLflow helper process exited (code {self._proc.poll()}); see the log above") from None

    def receive(self) -> dict[str, Any]:
        """The answer to the oldest request not yet answered; raises ``TrackingError`` for a refusal."""
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise TrackingError(f"the MLflow helper process exited (code {self._proc.wait()}); see the log above")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise TrackingError(answer.get("error") or "unknown error")
        return answer

    @property
    def asked_to_open(self) -> bool:
        """Whether an ``open`` request was sent (a run may exist)."""
        return self._asked_to_open

    def close(self, timeout: float = 30) -> None:
        """Let the helper finish and exit; one that was never asked to open a run is simply stopped."""
        if not self._asked_to_open:
            self._proc.kill()  # it holds nothing yet, and waiting would mean waiting for `import mlflow`
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("the MLflow helper did not exit in %s s; killing it", timeout)
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()


class _Helper:
    """The helper's state: one client, at most one open run."""

    def __init__(self) -> None:
        from . import tracking

        self.tracking = tracking
        self.uri = os.environ["MLFLOW_TRACKING_URI"]
        self.client = tracking.make_client(self.uri)
        self.run_id: str | None = None

    def warm_up(self) -> None:
        """Open the store now (a fresh SQLite store gets its schema here), before the first request."""
        self.client.search_experiments(max_results=1)

    def open(self, request: dict[str, Any]) -> dict[str, Any]:
        run_id, experiment_id = self.tracking.start_run(
            self.client, uri=self.uri, experiment=request["experiment"], run_name=request["run_name"],
            tags=request["tags"], params=request["params"], parent_run_id=request.get("parent_run_id"))
        self.run_id = run_id
        return {"run_id": run_id, "experiment_id": experiment_id}

    def finish(self, request: dict[str, Any]) -> dict[str, Any]:
        """Log the output files that exist, the outcome tags and the final status; return the metrics."""
        assert self.run_id is not None
        artifacts = [Path(p) for p in request.get("artifacts", [])]
        metrics = self.tracking.finish_run(self.client, self.run_id, status=request["status"],
                                           tags=dict(request.get("tags") or {}), artifacts=artifacts)
        self.run_id = None
        return {"metrics": metrics}

    def abort(self, request: dict[str, Any]) -> dict[str, Any]:
        """End the open run, if any, before the notebook ran: ``{"outcome": "FAILED"|"KILLED", "reason"}``."""
        if self.run_id is not None:
            outcome = request.get("outcome", "FAILED")
            self.tracking.finish_run(self.client, self.run_id, status="KILLED" if outcome == "KILLED" else "FAILED",
                                     tags={"nbscale.status": outcome, "nbscale.error": request.get("reason", "")},
                                     artifacts=[])
            self.run_id = None
        return {}


def serve(requests: IO[str], answers: IO[str]) -> None:
    """Answer requests until stdin closes; an open run left behind is ended FAILED."""
    helper: _Helper | None = None
    startup_error: Exception | None = None
    try:
        started = time.monotonic()
        helper = _Helper()
        imported = time.monotonic()
        helper.warm_up()
        log.info("mlflow imported in %.1f s, store ready in %.1f s", imported - started, time.monotonic() - imported)
    except Exception as exc:  # noqa: BLE001 - reported with the first request, which is when the main process listens
        startup_error = exc
    for line in requests:
        request = json.loads(line)
        try:
            if helper is None or startup_error is not None:
                raise TrackingError(f"MLflow store {os.environ.get('MLFLOW_TRACKING_URI')!r} is not usable: {startup_error}")
            if request["op"] not in ("open", "finish", "abort"):
                raise TrackingError(f"unknown request {request['op']!r}")
            answer = getattr(helper, request["op"])(request)
            answer["ok"] = True
        except Exception as exc:
            log.debug("request %s failed", request.get("op"), exc_info=True)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    if helper is not None and helper.run_id is not None:
        helper.abort({"outcome": "FAILED", "reason": "the step runtime stopped without reporting an outcome"})


def main() -> None:
    """Entry point of the helper process."""
    from .speedups import skip_slow_optional_imports

    skip_slow_optional_imports()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nbscale-step[mlflow] %(levelname)s %(message)s")
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything MLflow prints goes to the log, not into the protocol
    serve(sys.stdin, answers)
    answers.close()
    sys.stderr.flush()
    os._exit(0)  # everything is recorded; skip tearing down mlflow's hundreds of modules (about a second)


if __name__ == "__main__":
    main()
