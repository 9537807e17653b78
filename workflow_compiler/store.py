"""Run records: what was submitted, where it runs, and how it is doing.

Records live in one SQLite file, ``$NBSCALE_HOME/runs.db``, so they survive restarts and one
user has one run list: the CLI, the magics, the Jupyter server extension and the detached local
workers that update them all read and write it. (The server extension once kept its own file under
the Jupyter data dir; it imports that file's records once, with ``import_records``.)
"""

from __future__ import annotations

import builtins
import functools
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import tracking_uri
from .errors import RunNotFound
from .private_files import private_home, touch_private
from .redaction import redact

RunStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "KILLED"]
TERMINAL: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "KILLED"})


def nbscale_home() -> Path:
    """``$NBSCALE_HOME`` (default ``~/.nbscale``), created 0700 when missing; UnsafeFolder when others own or can write it."""
    return private_home(tracking_uri.nbscale_home())


def utcnow() -> str:
    """Now, as an ISO-8601 UTC timestamp."""
    return datetime.now(UTC).isoformat(timespec="seconds")


#: The record models build their validators at their first validation, not at import: `nbscale runs` and
#: `status` read rows with ``record_from_row`` and never build one (~0.12 s of CPU with pydantic's plugin scan).
_DEFERRED = ConfigDict(defer_build=True)


class Progress(BaseModel):
    """How far a run is: cells for a run, steps for a pipeline, trials for a sweep."""

    model_config = _DEFERRED

    done: int = 0
    total: int = 0
    unit: str = "cells"
    running: int = 0
    stopped: int = 0
    failed: int = 0
    #: Steps waiting for admission (e.g. a Kueue LocalQueue holds their pods): waiting, not running.
    queued: int = 0
    #: A short note on what the counts do not say, e.g. "queued in team-a" (shown beside the status).
    detail: str | None = None


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``: a record's duration as the CLI, the magics and the Runs panel show it."""
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m = s // 60
    return f"{m}m {s % 60:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


class StepState(BaseModel):
    """One step of a run's workflow, as the executor sees it."""

    model_config = _DEFERRED

    name: str
    status: RunStatus = "PENDING"
    attempts: int = 0
    mlflow_run_id: str | None = None
    error: str | None = None
    output_dir: str | None = None
    progress: Progress = Field(default_factory=Progress)


class RunRecord(BaseModel):
    """Everything the CLI, the REST API and the UI show about one run."""

    model_config = _DEFERRED

    id: str
    kind: Literal["run", "pipeline", "sweep"] = "run"
    notebook: str
    status: RunStatus = "PENDING"
    user: str = ""
    executor: str = "local"
    #: The Kubernetes namespace of the run's Workflow (cluster executors only).
    namespace: str = ""
    workflow_name: str = ""
    progress: Progress = Field(default_factory=Progress)
    created: str = Field(default_factory=utcnow)
    started: str | None = None
    finished: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    best: dict[str, Any] | None = None
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    pid: int | None = None
    #: Who ``pid`` was when the run started (``process_start``): a pid that names another process since is gone.
    pid_start: str | None = None
    run_dir: str = ""
    steps: list[StepState] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: The GPU-quota lease the run holds inside JupyterHub (None when quotas are off or no GPU is used).
    lease_id: str | None = None
    lease_gpus: int = 0
    #: When a cancel was asked for (cluster executors stop in stages and finish later).
    cancel_requested: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running)."""
        if not self.started:
            return None
        end = datetime.fromisoformat(self.finished) if self.finished else datetime.now(UTC)
        return max(0.0, (end - datetime.fromisoformat(self.started)).total_seconds())

    @property
    def phase(self) -> Literal["stopping", "queued"] | None:
        """What an unfinished run's status does not say: "stopping" from a cancel until the run has ended, "queued"
        while admission (a Kueue LocalQueue) holds every step; else None. The one rule the CLI, the magics and the
        Runs panel (the API's ``phase``) show both states by."""
        if self.done:
            return None
        if self.cancel_requested:
            return "stopping"
        if self.progress.queued and not self.progress.running:
            return "queued"
        return None

    @property
    def status_label(self) -> str:
        """The status as people read it: "queued in team-a" rather than "running" while admission holds every
        step, and "stopping" from a cancel until the run has ended (``phase``)."""
        phase, detail = self.phase, self.progress.detail
        if phase == "stopping":
            return "stopping"
        if self.done or not detail:
            return self.status.lower()
        if phase == "queued":
            return detail
        return f"{self.status.lower()} ({detail})"

    @property
    def done(self) -> bool:
        """True once the run has reached a final status."""
        return self.status in TERMINAL

    def to_api(self) -> dict[str, Any]:
        """The JSON form the REST API and ``--json`` print (with the derived duration)."""
        try:
            data = {name: _as_json(getattr(self, name)) for name in RunRecord.model_fields if name not in _PROCESS}
        except _NotPlainJson:
            data = self.model_dump(mode="json", exclude=_PROCESS)
        data["duration"] = self.duration
        data["status_label"] = self.status_label
        data["phase"] = self.phase
        return data


_PROCESS = {"pid", "pid_start"}  # this machine's process identity: not shown to API clients


def record_from_row(text: str) -> RunRecord:
    """A record as the run store keeps it (JSON), nested models and all.

    Every row is validated on its way in (``create``, ``update``) and the file is the user's alone,
    so a row with exactly the current models' fields is built without validating it again; any
    other row (written by an older nbscale, or imported) is validated, which fills in what it lacks.
    """
    data = json.loads(text)
    data.setdefault("pid_start", None)  # rows from before it: still the fast path (``runs`` reads every row)
    if not _has_fields(data, RunRecord) or not _has_fields(data["progress"], Progress) or not isinstance(data["steps"], list) \
            or not all(_has_fields(s, StepState) and _has_fields(s["progress"], Progress) for s in data["steps"]):
        return RunRecord.model_validate(data)
    steps = [StepState.model_construct(**{**s, "progress": Progress.model_construct(**s["progress"])}) for s in data["steps"]]
    return RunRecord.model_construct(**{**data, "progress": Progress.model_construct(**data["progress"]), "steps": steps})


def _has_fields(data: Any, model: type[BaseModel]) -> bool:
    """True when ``data`` is a dict with exactly the fields of ``model``, as ``model_dump_json`` writes them."""
    return isinstance(data, dict) and data.keys() == model.model_fields.keys()


class _NotPlainJson(Exception):
    """A value that pydantic's JSON mode would convert (a tuple, an enum, a date, infinity, a subclass)."""


_JSON_SCALARS = (str, int, float, bool, type(None))


def _as_json(value: Any) -> Any:
    """``value`` as ``model_dump(mode="json")`` gives it, when it is already plain JSON; _NotPlainJson otherwise."""
    # dumping through pydantic builds the records' serializers first (~35 ms with its plugin scan): a CLI
    # reading records prints values that JSON gave it, which dump as themselves
    kind = type(value)
    if kind in (Progress, StepState):
        return {name: _as_json(getattr(value, name)) for name in kind.model_fields}
    if kind is list:
        return [_as_json(v) for v in value]
    if kind is dict and all(type(k) is str for k in value):
        return {k: _as_json(v) for k, v in value.items()}
    if kind in _JSON_SCALARS and (kind is not float or math.isfinite(value)):
        return value
    raise _NotPlainJson(kind.__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    notebook TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
"""


class RunStore:
    """Run records in a SQLite file, safe to share between processes (WAL mode, short transactions)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else nbscale_home() / "runs.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        touch_private(self.path)  # SQLite gives its -wal and -shm files the database's mode
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    def create(self, record: RunRecord) -> RunRecord:
        """Store a new record."""
        if record.error:
            record = record.model_copy(update={"error": redact(record.error)})
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, created, notebook, status, record) VALUES (?, ?, ?, ?, ?)",
                       (record.id, record.created, record.notebook, record.status, record.model_dump_json()))
        return record

    def get(self, run_id: str) -> RunRecord:
        """The record of ``run_id``; RunNotFound when there is none."""
        with self._connect() as db:
            row = db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r}. List runs with `nbscale runs`.")
        return record_from_row(row[0])

    def list(self, *, notebook: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[RunRecord], int]:
        """Newest first, filtered; returns one page and the total count."""
        where, args = [], []
        if notebook:
            where.append("notebook = ?")
            args.append(notebook)
        if status:
            where.append("status = ?")
            args.append(status.upper())
        clause = f"WHERE {' AND '.join(where)}" if where else ""  # only fixed column names are joined
        with self._connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM runs {clause}", args).fetchone()[0]
            rows = db.execute(f"SELECT record FROM runs {clause} ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?",
                              [*args, limit, offset]).fetchall()
        return [record_from_row(r[0]) for r in rows], total

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        """Change some fields of a record atomically and return the new record."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT record FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                db.execute("ROLLBACK")
                raise RunNotFound(f"no run {run_id!r}. List runs with `nbscale runs`.")
            data = json.loads(row[0])
            if fields.get("error"):  # every error a record keeps passes here: no credential stays in it
                fields["error"] = redact(str(fields["error"]))
            data.update({k: (v.model_dump(mode="json") if isinstance(v, BaseModel) else v) for k, v in fields.items()})
            if isinstance(data.get("steps"), list):
                data["steps"] = [s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in data["steps"]]
            record = RunRecord.model_validate(data)
            db.execute("UPDATE runs SET status = ?, notebook = ?, record = ? WHERE id = ?",
                       (record.status, record.notebook, record.model_dump_json(), run_id))
            db.execute("COMMIT")
        return record

    def import_records(self, other: str | os.PathLike[str]) -> int:
        """Copy in every record of another run database that this one lacks; returns how many were new."""
        with self._connect() as db:
            before = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            db.execute("ATTACH DATABASE ? AS other", (str(other),))
            db.execute("INSERT OR IGNORE INTO runs (id, created, notebook, status, record) "
                       "SELECT id, created, notebook, status, record FROM other.runs")
            after = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            db.execute("DETACH DATABASE other")
        return int(after - before)

    def reconcile(self) -> builtins.list[str]:
        """Mark runs whose worker process is gone as FAILED (lost). Returns their ids."""
        lost: builtins.list[str] = []
        for status in ("PENDING", "RUNNING"):
            records, _ = self.list(status=status, limit=10_000)
            for record in records:
                if record.executor == "local" and not pid_alive(record.pid, record.pid_start):
                    if self.get(record.id).done:  # it recorded its end just before it exited: that end stands
                        continue
                    self.update(record.id, status="FAILED", finished=utcnow(),
                                error="lost: its worker process ended without recording a result (machine or server restart?)")
                    lost.append(record.id)
        return lost


def pid_alive(pid: int | None, started: str | None = None) -> bool:
    """True when a process of this user's with this pid exists and is not a zombie; and, given ``started`` (``process_start``
    when the pid was recorded), when it is still that process rather than a later one the pid was reused for."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # another user's process is no worker of ours, whatever /proc shows
        return False
    try:
        fields = _stat_fields(pid)
        now = _start_of(fields)
    except (OSError, IndexError):
        return True
    return fields[0] != "Z" and (started is None or now == started)


def process_start(pid: int | None) -> str | None:
    """Which process ``pid`` names now: the boot's id and its start time (field 22 of ``/proc/<pid>/stat``,
    in clock ticks since boot); None when there is no such process or no ``/proc`` to ask."""
    if not pid:
        return None
    try:
        return _start_of(_stat_fields(pid))
    except (OSError, IndexError):
        return None


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from its third field (the state) on: the name before may hold spaces and parentheses."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_of(fields: list[str]) -> str:
    return f"{_boot_id()}:{fields[19]}"  # field 22 is the 20th from the state


@functools.cache
def _boot_id() -> str:
    """This boot's random id: start times count from boot, so a record from before a reboot matches nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def wait_until(predicate: Callable[[], object], *, timeout: float | None, interval: float = 0.2,
               sleep: Callable[[float], object] | None = None) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False).

    Between two looks, ``sleep(seconds)`` (``time.sleep`` by default): ``interval``, or what is left before the deadline if less.
    A ``sleep`` that may return early (an executor's ``pause``, an event's ``wait``) only brings the next look sooner.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not predicate():
        left = interval if deadline is None else min(interval, deadline - time.monotonic())
        if left <= 0:
            return False
        (sleep or time.sleep)(left)
    return True
