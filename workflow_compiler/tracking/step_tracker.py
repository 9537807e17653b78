"""A helper process that owns the step's MLflow run while the main process runs the notebook.

Why a process: ``import mlflow`` (2-4 s here) and the run's creation can then use the second core
while the main process imports papermill and the kernel starts, instead of adding their time to
every step. It also ends the run when the main process dies without a word.

On the embedded default the same protocol is served by the local executor's warm agent (agent.py, the ``step`` protocol),
which has imported MLflow already; ``TrackerProcess`` connects to it when the executor names one in
``NBSCALE_TRACKING_AGENT`` and starts a helper otherwise.

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

from ..errors import NbscaleError
from ..redaction import redact, redact_logs
from ..tracking_uri import without_telemetry
from .agent import ENV_SOCKET, connect, serves

log = logging.getLogger(__name__)


class TrackingError(Exception):
    """MLflow could not be reached or refused a request; the message says which and why."""


class TrackerProcess:
    """The main process's handle on the helper."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._asked_to_open = False
        self._proc: subprocess.Popen[str] | None = None
        self._socket: Any = None
        self._requests: IO[str]
        self._answers: IO[str]
        self._ready = False
        agent_socket = os.environ.get(ENV_SOCKET, "")
        hello: dict[str, Any] = {}
        connection = connect(agent_socket, uri, wait=2.0, hello=hello) if os.path.isabs(agent_socket) and serves(uri) else None
        if connection is not None:  # the local executor's warm agent: MLflow is imported already, or being imported
            self._socket, self._answers, self._requests = connection
            self._ready = bool(hello.get("ready"))
            log.info("MLflow through the warm tracking agent at %s", agent_socket)
            return
        env = without_telemetry({**os.environ, "MLFLOW_TRACKING_URI": uri})
        self._proc = subprocess.Popen([sys.executable, "-m", "workflow_compiler.tracking.step_tracker"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._requests, self._answers = self._proc.stdin, self._proc.stdout

    @property
    def warm(self) -> bool:
        """Whether requests go to the warm agent rather than a new helper."""
        return self._proc is None

    @property
    def ready(self) -> bool:
        """Whether the agent had imported MLflow when the step connected (not one that the first run of a
        session started moments ago, which still needs the CPU): the step may then spend its own freely."""
        return self._proc is None and self._ready

    def _gone(self) -> str:
        if self._proc is None:
            return "the tracking agent closed the connection; see its log in $NBSCALE_HOME/agent/agent.log"
        return f"the MLflow helper process exited (code {self._proc.poll()}); see the log above"

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        self.send(op, **fields)
        return self.receive()

    def send(self, op: str, **fields: Any) -> None:
        """Send one request; ``receive()`` reads its answer."""
        self._asked_to_open = self._asked_to_open or op == "open"
        try:
            self._requests.write(json.dumps({"op": op, **fields}) + "\n")
            self._requests.flush()
        except (BrokenPipeError, ConnectionError):
            raise TrackingError(self._gone()) from None

    def receive(self) -> dict[str, Any]:
        """The answer to the oldest request not yet answered; raises ``TrackingError`` for a refusal."""
        try:
            line = self._answers.readline()
        except ConnectionError:
            line = ""
        if not line:
            if self._proc is not None:
                self._proc.wait()
            raise TrackingError(self._gone())
        answer = json.loads(line)
        if not answer.get("ok"):
            raise TrackingError(answer.get("error") or "unknown error")
        return answer

    @property
    def asked_to_open(self) -> bool:
        """Whether an ``open`` request was sent (a run may exist)."""
        return self._asked_to_open

    def close(self, timeout: float = 30) -> None:
        """Let the helper finish and exit; one that was never asked to open a run is simply stopped.

        With the agent, closing the connection is all: every request was answered, and a run left
        open is ended FAILED by the agent, as by a helper that sees its stdin close.
        """
        if self._proc is None:
            for handle in (self._requests, self._answers, self._socket):
                try:
                    handle.close()
                except OSError:
                    pass
            return
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

    def __init__(self, uri: str) -> None:
        from ..runtime import tracking

        self.tracking = tracking
        self.uri = uri
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


def serve(requests: IO[str], answers: IO[str], *, uri: str) -> None:
    """Answer requests until ``requests`` closes; an open run left behind is ended FAILED."""
    helper: _Helper | None = None
    startup_error: Exception | None = None
    try:
        started = time.monotonic()
        helper = _Helper(uri)
        imported = time.monotonic()
        helper.warm_up()
        log.info("mlflow imported in %.1f s, store ready in %.1f s", imported - started, time.monotonic() - imported)
    except Exception as exc:  # noqa: BLE001 - reported with the first request, which is when the main process listens
        startup_error = exc
    for line in requests:
        request = json.loads(line)
        try:
            if isinstance(startup_error, NbscaleError):  # says what is wrong and what to do (an unreachable server)
                raise TrackingError(startup_error.message)
            if helper is None or startup_error is not None:
                raise TrackingError(f"MLflow store {uri!r} is not usable: {startup_error}")
            if request["op"] not in ("open", "finish", "abort"):
                raise TrackingError(f"unknown request {request['op']!r}")
            answer = getattr(helper, request["op"])(request)
            answer["ok"] = True
        except Exception as exc:
            log.debug("request %s failed", request.get("op"), exc_info=True)
            said = str(exc) if isinstance(exc, TrackingError) else f"{type(exc).__name__}: {exc}"  # ours need no type name
            answer = {"ok": False, "error": redact(' '.join(said.split())[:500])}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    if helper is not None and helper.run_id is not None:
        helper.abort({"outcome": "FAILED", "reason": "the step runtime stopped without reporting an outcome"})


def main() -> None:
    """Entry point of the helper process."""
    from ..runtime.speedups import skip_slow_optional_imports

    skip_slow_optional_imports()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nbscale-step[mlflow] %(levelname)s %(message)s")
    redact_logs()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything MLflow prints goes to the log, not into the protocol
    serve(sys.stdin, answers, uri=os.environ["MLFLOW_TRACKING_URI"])
    answers.close()
    sys.stderr.flush()
    os._exit(0)  # everything is recorded; skip tearing down mlflow's hundreds of modules (about a second)


if __name__ == "__main__":
    main()
