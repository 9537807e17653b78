"""Group commit: the write operations that threads queue up while one transaction runs share the next one.

Admission is serialised anyway (one database write lock on SQLite, the process's mutex, a row lock
per user on Postgres), so a transaction's fixed cost (``BEGIN IMMEDIATE``, ``COMMIT``, the pool,
thread hand-offs) is paid once per batch instead of once per decision. The group commit's own thread
takes the lock and runs every queued operation in order in one transaction, and hands each caller
its own result after the commit; nobody learns a result that was not committed.

Each operation sees the writes of the ones before it (same connection), so the no-over-admission
argument of :mod:`hub_extension.store` holds operation by operation. An operation that raises a
:class:`~hub_extension.errors.QuotaServiceError` (a 404, 409 or 410 answer) has made no write that
would be wrong to keep (at most a reclaim of overdue leases) and does not spoil the batch. Any other
error rolls the batch back and each operation runs again alone, so only the failing one fails.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .errors import QuotaServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")


class _Pending:
    """One queued operation; its outcome (after the commit) goes to ``future``."""

    __slots__ = ("future", "op", "order")

    def __init__(self, op: Callable[[Any], Any], order: str, future: Future[Any]) -> None:
        self.op, self.order, self.future = op, order, future

    def settle(self, ok: bool, value: Any) -> None:
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


class GroupCommit(Generic[C]):
    """Run write operations from many threads in shared transactions (at most ``max_batch`` each).

    ``begin`` opens a write transaction (a context manager that yields what operations are given,
    and commits on exit); ``order`` sorts a batch so that two processes take per-user row locks in
    the same order (no deadlock). ``lock`` is held while a batch runs. ``prepare``, if given, sees
    the whole batch (``(order, op)`` pairs) in its transaction before the operations run.

    Operations queue (:meth:`submit`, or :meth:`run` to wait for the result); one thread of the
    group commit's own runs the queue until it is empty, so a waiting caller sleeps on its future and
    nobody polls.
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[C]], *, lock: Any, max_batch: int = 64,
                 prepare: Callable[[C, list[tuple[str, Callable[[C], Any]]]], None] | None = None) -> None:
        self.begin = begin
        self.lock = lock
        self.prepare = prepare
        self.max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._drainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quota-group-commit")
        self._draining = False
        self._draining_lock = threading.Lock()

    def run(self, op: Callable[[C], T], *, order: str = "") -> T:
        """Run ``op(conn)`` in a write transaction, possibly shared with other threads' operations."""
        return self.submit(op, order=order).result()

    def submit(self, op: Callable[[C], T], *, order: str = "") -> Future[T]:
        """Queue ``op(conn)`` without waiting: its result (after the commit) comes in the future."""
        future: Future[T] = Future()
        self._queue.append(_Pending(op, order, future))
        with self._draining_lock:
            start, self._draining = not self._draining, True
        if start:
            self._drainer.submit(self._drain)
        return future

    def _drain(self) -> None:
        """Run batches until the queue is empty."""
        while True:
            with self.lock:
                while self._queue:
                    self._run_batch(list(self._take()))
            with self._draining_lock:
                if not self._queue:  # checked under the flag's lock: a submit now starts a new drain
                    self._draining = False
                    return

    def _take(self) -> Iterator[_Pending]:
        for _ in range(self.max_batch):
            try:
                yield self._queue.popleft()
            except IndexError:
                return

    def _run_batch(self, batch: list[_Pending]) -> None:
        batch.sort(key=lambda item: item.order)  # same lock order in every process
        outcomes: list[tuple[_Pending, bool, Any]] = []
        try:
            with self.begin() as conn:
                if self.prepare is not None:
                    self.prepare(conn, [(item.order, item.op) for item in batch])
                for item in batch:
                    try:
                        outcomes.append((item, True, item.op(conn)))
                    except QuotaServiceError as exc:
                        outcomes.append((item, False, exc))
        except Exception as exc:
            if len(batch) == 1:
                batch[0].settle(False, exc)
                return
            log.warning("a shared write transaction of %s operations failed (%s); running them one by one",
                        len(batch), exc)
            for item in batch:
                self._run_batch([item])
            return
        for item, ok, value in outcomes:
            item.settle(ok, value)
