"""Group commit: the write operations that threads queue up while one transaction runs share the next one.

Admission is serialised anyway (one database write lock on SQLite, the process's mutex, a row lock
per user on Postgres), so a transaction's fixed cost (``BEGIN IMMEDIATE``, ``COMMIT``, the pool,
thread hand-offs) is paid once per batch instead of once per decision. Whoever takes the lock runs
every queued operation in order in one transaction and hands each thread its own result after the
commit; nobody learns a result that was not committed.

Each operation sees the writes of the ones before it (same connection), so the no-over-admission
argument of :mod:`hub_extension.store` holds operation by operation. An operation that raises a
:class:`~hub_extension.errors.QuotaServiceError` (a 404, 409 or 410 answer) has made no write that
would be wrong to keep (at most a reclaim of overdue leases) and does not spoil the batch. Any other
error rolls the batch back and each operation runs again alone, so only the failing one fails.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .errors import QuotaServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")
Operation = Callable[[Any], Any]


class GroupCommit(Generic[C]):
    """Run write operations from many threads in shared transactions (at most ``max_batch`` each).

    ``begin`` opens a write transaction (a context manager that yields what operations are given,
    and commits on exit); ``order`` sorts a batch so that two processes take per-user row locks in
    the same order (no deadlock).
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[C]], *, lock: Any, max_batch: int = 64) -> None:
        self.begin = begin
        self.lock = lock
        self.max_batch = max_batch
        self._queue: deque[tuple[str, Operation, Future[Any]]] = deque()

    def run(self, op: Callable[[C], T], *, order: str = "") -> T:
        """Run ``op(conn)`` in a write transaction, possibly shared with other threads' operations."""
        done: Future[Any] = Future()
        self._queue.append((order, op, done))
        with self.lock:
            while not done.done() and self._queue:
                self._run_batch(list(self._take()))
        return done.result()  # type: ignore[no-any-return]

    def _take(self) -> Iterator[tuple[str, Operation, Future[Any]]]:
        for _ in range(self.max_batch):
            try:
                yield self._queue.popleft()
            except IndexError:
                return

    def _run_batch(self, batch: list[tuple[str, Operation, Future[Any]]]) -> None:
        batch.sort(key=lambda item: item[0])  # same lock order in every process
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            with self.begin() as conn:
                for _, op, done in batch:
                    try:
                        outcomes.append((done, True, op(conn)))
                    except QuotaServiceError as exc:
                        outcomes.append((done, False, exc))
        except Exception as exc:
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
                return
            log.warning("a shared write transaction of %s operations failed (%s); running them one by one",
                        len(batch), exc)
            for item in batch:
                self._run_batch([item])
            return
        for done, ok, value in outcomes:
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)
