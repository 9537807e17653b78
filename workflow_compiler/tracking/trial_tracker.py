"""Where a trial worker's MLflow writes go: the warm tracking agent, or the worker's own client.

On the embedded default a sweep's trial workers hand their runs to the local executor's warm
tracking agent (``agent.py``), which has MLflow's SQLite store loaded already. A worker
then never imports the store (~1.4 s of CPU per worker on 2 cores, in the sweep's cold start), and
the end of a completed trial's run overlaps the worker's hand-over to Tune: the worker does not
wait for that ``finish`` but reports to Tune while the agent attaches the notebook and ends the
run. Answers come back in order on the one connection, so the next ``open`` also confirms every
earlier request. The driver waits for those ends before it closes a sweep's dangling runs
(``sweep/tracking.settle_children``).

A failed or early-stopped trial waits for its ``finish``, as Tune's callbacks close those runs too.
Anything the agent cannot take (not running, another code version, a remote tracking server, a
lost connection, a write MLflow refused it) goes through the worker's own ``MlflowClient``, as on a
cluster, for the rest of the worker's life; requests the agent had not confirmed are written again
there (MLflow takes a repeated end, tag or metric as it is), and an unanswered ``open`` takes up
the run the agent may have created.

Protocol (after the agent's handshake, with ``"serve": "trials"``): one JSON object per line, each
answered by ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}`` in order. ``wait`` says
whether the worker waits for the answer: the agent serves those first (``_Turns``).
``open``: experiment_id, parent_run_id, sweep_id, trial_id, name, params, tags -> run_id, artifact_uri;
``metrics``: run_id, metrics ([name, value, timestamp_ms, step] lists); ``finish``: run_id, status,
error, artifacts, metrics, artifact_uri.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

from ..sweep import tracking
from . import agent

log = logging.getLogger(__name__)

MetricRow = tracking.MetricRow


class TrialTracker(Protocol):
    """The three writes of a trial attempt's child run."""

    def open(self, **fields: Any) -> tuple[str, str | None]:
        """Create the child run (``tracking.open_trial_run``'s fields); returns its id and artifact URI."""

    def log_metrics(self, run_id: str, metrics: list[MetricRow]) -> None:
        """Write a batch of the notebook's metrics."""

    def finish(self, run_id: str, status: str, *, error: str | None, artifacts: tuple[str, ...], metrics: list[MetricRow],
               artifact_uri: str | None, wait: bool) -> None:
        """Attach the output notebook, write the last metrics and the status tags, end the run."""


class DirectTracker:
    """This process's own MLflow client (a cluster's workers, or no agent to hand the runs to)."""

    def __init__(self, uri: str) -> None:
        self.client = tracking.client(uri)

    def open(self, **fields: Any) -> tuple[str, str | None]:
        info = tracking.open_trial_run(self.client, **fields)
        return str(info.run_id), info.artifact_uri

    def reopen(self, **fields: Any) -> tuple[str, str | None]:
        """``open``, taking up the run a lost agent may have created for this attempt (see ``tracking``)."""
        info = tracking.reopen_trial_run(self.client, **fields)
        return str(info.run_id), info.artifact_uri

    def log_metrics(self, run_id: str, metrics: list[MetricRow]) -> None:
        tracking.log_metric_rows(self.client, run_id, metrics)

    def finish(self, run_id: str, status: str, *, error: str | None, artifacts: tuple[str, ...], metrics: list[MetricRow],
               artifact_uri: str | None, wait: bool = True) -> None:
        tracking.finish_trial_run(self.client, run_id, status, error=error, artifacts=artifacts, metrics=metrics,
                                  artifact_uri=artifact_uri)


class AgentLost(ConnectionError):
    """The agent's connection closed or broke; the worker goes on with its own client."""


class AgentTracker:
    """A connection to the warm agent, shared by the trial thread and the metric writer thread."""

    def __init__(self, connection: tuple[Any, IO[str], IO[str]], uri: str) -> None:
        self._sock, self._answers, self._requests = connection
        self.uri = uri
        self._lock = threading.Lock()
        self._unanswered: deque[dict[str, Any]] = deque()  # sent, answer not read yet (oldest first)
        self._fallback: DirectTracker | None = None

    @classmethod
    def connect(cls, socket_path: str, uri: str) -> AgentTracker | None:
        """A tracker on the agent at ``socket_path``, or None when it cannot serve ``uri``."""
        if not (os.path.isabs(socket_path) and agent.serves(uri)):
            return None
        connection = agent.connect(socket_path, uri, wait=2.0, serve="trials")
        return None if connection is None else cls(connection, uri)

    def open(self, **fields: Any) -> tuple[str, str | None]:
        answer = self._call({"op": "open", **fields}, wait=True)
        if answer is None:
            assert self._fallback is not None  # noqa: S101 - _call set it when the agent was lost
            return self._fallback.reopen(**fields)
        return str(answer["run_id"]), answer.get("artifact_uri")

    def log_metrics(self, run_id: str, metrics: list[MetricRow]) -> None:
        self._call({"op": "metrics", "run_id": run_id, "metrics": metrics}, wait=False)

    def finish(self, run_id: str, status: str, *, error: str | None, artifacts: tuple[str, ...], metrics: list[MetricRow],
               artifact_uri: str | None, wait: bool = True) -> None:
        self._call({"op": "finish", "run_id": run_id, "status": status, "error": error, "artifacts": list(artifacts),
                    "metrics": metrics, "artifact_uri": artifact_uri}, wait=wait)

    def _call(self, request: dict[str, Any], *, wait: bool) -> dict[str, Any] | None:
        """Send ``request``; with ``wait``, read answers up to its own and return it.

        Without the agent (now or since an earlier request) the request is written by this
        process's client instead, and None is returned for an ``open`` (the caller opens directly).
        """
        with self._lock:
            if self._fallback is not None:
                if request["op"] == "open":
                    return None
                self._write_directly(request)
                return {}
            self._unanswered.append(request)
            try:
                self._requests.write(json.dumps({**request, "wait": wait}) + "\n")
                self._requests.flush()
                answer: dict[str, Any] = {}
                while wait and self._unanswered:
                    answer = self._read_answer()
                return answer
            except (OSError, ValueError, AgentLost) as exc:
                self._lose(exc)  # writes this request again too, unless it is an open
                return None if request["op"] == "open" else {}

    def _read_answer(self) -> dict[str, Any]:
        line = self._answers.readline()
        if not line:
            raise AgentLost("the tracking agent closed the connection")
        answer = json.loads(line)
        if not answer.get("ok"):  # the agent is there but MLflow refused: this process's client tries instead
            request = self._unanswered[0]
            raise AgentLost(f"it could not {request['op']} run {request.get('run_id', '')}: {answer.get('error')}")
        self._unanswered.popleft()
        return answer

    def _lose(self, exc: BaseException) -> None:
        """Close the connection, switch to this process's client, write again what the agent had not confirmed."""
        log.warning("tracking agent not usable (%s); this worker writes its runs itself from now on", exc)
        self._close()
        self._fallback = DirectTracker(self.uri)
        pending, self._unanswered = list(self._unanswered), deque()
        for request in pending:
            if request["op"] != "open":  # an open without an answer: the caller opens it (``reopen``)
                self._write_directly(request)

    def _close(self) -> None:
        for handle in (self._requests, self._answers, self._sock):
            try:
                handle.close()
            except OSError:
                pass

    def _write_directly(self, request: dict[str, Any]) -> None:
        assert self._fallback is not None  # noqa: S101
        if request["op"] == "metrics":
            self._fallback.log_metrics(request["run_id"], request["metrics"])
        elif request["op"] == "finish":
            self._fallback.finish(request["run_id"], request["status"], error=request["error"],
                                  artifacts=tuple(request["artifacts"]), metrics=request["metrics"],
                                  artifact_uri=request["artifact_uri"])


_TRACKERS: dict[tuple[str, str], TrialTracker] = {}


def trial_tracker(uri: str, agent_socket: str | None) -> TrialTracker:
    """This process's tracker for ``uri``: the agent's when it takes it, else a direct client (kept for
    the worker's life: every later trial in it reuses the connection or client)."""
    key = (uri, agent_socket or "")
    tracker = _TRACKERS.get(key)
    if tracker is None:
        tracker = (AgentTracker.connect(agent_socket, uri) if agent_socket else None) or DirectTracker(uri)
        _TRACKERS[key] = tracker
    return tracker


# -- the agent's side ---------------------------------------------------------------------------


class _Turns:
    """The agent's trial requests take turns at the store, and one a worker waits for goes first.

    Each worker's connection has its own agent thread. Left to SQLite, two writers meet in its busy
    handler, which sleeps 1 ms to 100 ms between retries. And while a worker waits for its ``open``
    (its notebook cannot start before), no one waits for a completed trial's ``finish``. A
    ``finish`` waits behind at most the ``open``s of the other workers, which then run notebooks.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._urgent = 0  # waiting requests a worker waits for

    @contextmanager
    def turn(self, *, urgent: bool) -> Iterator[None]:
        """Hold the store (for one request) once it is free and no more urgent request waits."""
        with self._changed:
            self._urgent += urgent
            try:
                self._changed.wait_for(lambda: not self._busy and (urgent or not self._urgent))
            finally:
                self._urgent -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()


_TURNS = _Turns()


def serve_trials(requests: IO[str], answers: IO[str], *, uri: str) -> None:
    """Answer one trial worker's requests in order until it disconnects (runs in an agent thread)."""
    mc = tracking.client(uri)
    log.info("serving a sweep's trial worker")
    for line in requests:
        request = json.loads(line)
        try:
            op, waited_for = request.pop("op"), bool(request.pop("wait", True))
            with _TURNS.turn(urgent=waited_for):  # every open is waited for
                answer = _serve(mc, op, request)
        except Exception as exc:
            log.warning("trial request failed", exc_info=True)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _serve(mc: Any, op: str, request: dict[str, Any]) -> dict[str, Any]:
    if op == "open":
        # params before the answer: a notebook that logs a swept parameter with another value
        # must fail in its own cell, as MLflow refuses changed params
        info = tracking.open_trial_run(mc, **request)
        return {"ok": True, "run_id": str(info.run_id), "artifact_uri": info.artifact_uri}
    if op == "metrics":
        tracking.log_metric_rows(mc, request["run_id"], request["metrics"])
        return {"ok": True}
    if op == "finish":
        tracking.finish_trial_run(mc, request["run_id"], request["status"], error=request.get("error"),
                                  artifacts=tuple(request.get("artifacts", ())), metrics=request.get("metrics", []),
                                  artifact_uri=request.get("artifact_uri"))
        return {"ok": True}
    return {"ok": False, "error": f"unknown request {op!r}"}
