"""The executor interface and its registry (local now, Argo on a cluster, more through entry points)."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from pathlib import Path
from typing import Any

from ..errors import NbscaleError, RunNotFound
from ..store import RunRecord, RunStore, wait_until

#: The entry-point group executors register under, and the distribution that ships local and argo.
ENTRY_POINT_GROUP, DISTRIBUTION = "nbscale.executors", "nbscale"

#: A run's output files by name, and the record link that holds each one's path.
OUTPUT_LINKS = {"output.ipynb": "output_notebook", "output.html": "html"}


class UnknownExecutor(NbscaleError):
    """No executor is registered under that name."""


def new_run_id() -> str:
    """A fresh run id: ``nbs-`` and 10 hex characters."""
    return "nbs-" + secrets.token_hex(5)


class Executor(ABC):
    """Runs compiled Workflow manifests and reports on them through a RunStore."""

    name: str = ""

    def __init__(self, *, store: RunStore | None = None, **options: Any) -> None:
        self.store = store or RunStore()
        self.options = options

    @abstractmethod
    def submit(self, manifest: dict[str, Any], *, record: RunRecord) -> RunRecord:
        """Start running ``manifest``; ``record`` (from ``new_record``) is stored and returned updated."""

    def prepare(self, record: RunRecord) -> None:
        """Start, in the background, what running ``record`` will need, while the caller compiles it (nothing here)."""
        return None

    @abstractmethod
    def cancel(self, run_id: str, *, wait: float = 60.0) -> RunRecord:
        """Stop a run (waiting up to ``wait`` s for it to end); its steps end KILLED and keep partial outputs."""

    @abstractmethod
    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        """The run's log from byte ``offset``, and the offset to ask for next."""

    def for_run(self, run_id: str) -> Executor:
        """The executor that runs ``run_id``, as its record names it: this one, or one of that kind on the same store.

        One run list holds local and cluster runs alike, so each is followed by its own executor.
        """
        name = self.store.get(run_id).executor
        if name == self.name:
            return self
        peers: dict[str, Executor] = self.__dict__.setdefault("_peers", {})
        if name not in peers:
            peers[name] = get_executor(name, store=self.store, root=self.options.get("root"))
        return peers[name]

    def get(self, run_id: str) -> RunRecord:
        """The run's current record."""
        return self.store.get(run_id)

    def wait(self, run_id: str, *, timeout: float | None = None, interval: float = 0.3) -> RunRecord:
        """Block until the run reaches a final status (or ``timeout`` seconds pass); looks again after each ``pause``."""
        looked: list[RunRecord] = []  # the last look is the answer: no extra read (for argo, a request)

        def done() -> bool:
            looked[:] = [self.get(run_id)]
            return looked[-1].done

        wait_until(done, timeout=timeout, interval=interval, sleep=lambda seconds: self.pause(run_id, seconds))
        return looked[-1]

    def updates(self, run_id: str, *, interval: float = 0.3) -> Iterator[RunRecord]:
        """The record now and as it changes, until the run ends (here: after each ``pause``)."""
        while True:
            record = self.get(run_id)
            yield record
            if record.done:
                return
            self.pause(run_id, interval)

    def pause(self, run_id: str, seconds: float) -> None:
        """Wait before the next look at an unfinished run: ``seconds`` here; an executor that hears of changes wakes sooner."""
        time.sleep(seconds)

    def stream_logs(self, run_id: str, *, interval: float = 0.5) -> Iterator[str]:
        """The run's log as it is written, until the run ends and its log is read to the end."""
        offset = 0
        while True:
            text, offset = self.logs(run_id, offset)
            if text:
                yield text
            elif self.get(run_id).done:
                return
            else:
                time.sleep(interval)

    def output_file(self, run_id: str, name: str) -> Path:
        """The local path of one of a run's output files (``output.ipynb``, ``output.html``); RunNotFound when absent."""
        record = self.get(run_id)
        link = record.links.get(OUTPUT_LINKS.get(name, ""))
        if not link:
            raise RunNotFound(f"run {run_id} has no {name} (yet): status {record.status}.")
        path = Path(link).resolve()
        if record.run_dir and Path(record.run_dir).resolve() not in path.parents:
            raise RunNotFound(f"run {run_id}'s {name} is not in its run folder.")
        if not path.is_file():
            raise RunNotFound(f"run {run_id}'s {name} is missing from {path.parent}.")
        return path

    def stop_hint(self, record: RunRecord) -> str:
        """What to tell someone whose cancel has not finished yet."""
        return f"Check again with `nbscale status {record.id}`."

    def reattach(self) -> list[str]:
        """After a restart, follow again the runs that were in flight; returns their ids (none here)."""
        return []


def _own_entry_points() -> list[EntryPoint]:
    try:
        return [ep for ep in distribution(DISTRIBUTION).entry_points if ep.group == ENTRY_POINT_GROUP]
    except PackageNotFoundError:  # a source tree that was never installed: the full scan finds nothing either
        return []


def _all_entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


class ExecutorRegistry:
    """Executors by name, filled lazily from the ``nbscale.executors`` entry points."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Executor]] = {}

    def register(self, name: str, cls: type[Executor]) -> None:
        """Make ``cls`` available as ``name``."""
        self._classes[name] = cls

    def get(self, name: str) -> type[Executor]:
        """The executor class called ``name``; UnknownExecutor lists the known ones."""
        # nbscale's own distribution first (local, argo): scanning every installed one costs ~30 ms more
        for find in (_own_entry_points, _all_entry_points):
            if name not in self._classes:
                self._classes.update({ep.name: ep.load() for ep in find() if ep.name == name})
        if name not in self._classes:
            known = sorted({*self._classes, *(ep.name for ep in _all_entry_points())})
            raise UnknownExecutor(f"no executor {name!r}; known executors: {', '.join(known)}.")
        return self._classes[name]


executors = ExecutorRegistry()


def get_executor(name: str = "local", **options: Any) -> Executor:
    """An executor instance by name (``local`` or ``argo``)."""
    return executors.get(name)(**options)
