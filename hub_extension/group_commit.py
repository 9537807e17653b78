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
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .errors import CommitOutcomeUnknown, DatabaseConnectionLost, QuotaServiceError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")


class SharedLock:
    """A mutex that several writers share (group commits, admin writes): letting go of it wakes the
    first waiting thread of every group commit that uses it, so none of them has to poll the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakes: list[Callable[[], None]] = []

    def on_release(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever the lock is let go."""
        self._wakes.append(wake)

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock (as :meth:`threading.Lock.acquire`)."""
        return self._lock.acquire(blocking)

    def release(self) -> None:
        """Let go, then wake the waiters."""
        self._lock.release()
        for wake in self._wakes:
            wake()

    def __enter__(self) -> SharedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Pending:
    """One queued operation: the thread that queued it waits on ``woken`` for its outcome or its turn
    to lead; one queued by :meth:`GroupCommit.submit` gets its outcome in ``future``."""

    __slots__ = ("future", "op", "order", "outcome", "woken")

    def __init__(self, op: Callable[[Any], Any], order: str, future: Future[Any] | None = None) -> None:
        self.op, self.order, self.future = op, order, future
        self.outcome: tuple[bool, Any] | None = None
        self.woken = threading.Event()

    def settle(self, ok: bool, value: Any) -> None:
        self.outcome = (ok, value)
        self.woken.set()
        if self.future is not None:
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

    Threads call :meth:`run` and wait; an event loop calls :meth:`submit` and awaits the future,
    while one thread of the group commit's own runs the queue until it is empty.

    A waiting thread sleeps on its own event, not on the lock: it wakes once, with its result, or
    when the thread that ran the last batch hands it the turn to run the next (a thread whose
    operation is done never has to queue for the lock just to leave). Nobody polls: the batch's
    runner, the drain thread, and every holder of a :class:`SharedLock` hand the turn over when they
    let go, so ``lock`` must be this group commit's own or a :class:`SharedLock`.
    """

    def __init__(self, begin: Callable[[], AbstractContextManager[C]], *, lock: Any, max_batch: int = 64,
                 prepare: Callable[[C, list[tuple[str, Callable[[C], Any]]]], None] | None = None) -> None:
        self.begin = begin
        self.lock = lock
        self.prepare = prepare
        if isinstance(lock, SharedLock):  # its other holders wake this queue too
            lock.on_release(self._hand_over)
        self.max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._drainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quota-group-commit")
        self._draining = False
        self._draining_lock = threading.Lock()

    def run(self, op: Callable[[C], T], *, order: str = "") -> T:
        """Run ``op(conn)`` in a write transaction, possibly shared with other threads' operations."""
        mine = _Pending(op, order)
        self._queue.append(mine)
        while mine.outcome is None:
            if self.lock.acquire(blocking=False):
                try:
                    while mine.outcome is None and self._queue:
                        self._run_batch(list(self._take()))
                finally:
                    self.lock.release()
                self._hand_over()
            if mine.outcome is None:  # its turn comes when whoever holds the lock lets go (hand-over)
                mine.woken.wait()
                mine.woken.clear()
        ok, value = mine.outcome
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

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
        """Run batches until the queue is empty (what :meth:`submit` queued, and any waiting thread's)."""
        while True:
            with self.lock:
                while self._queue:
                    self._run_batch(list(self._take()))
            self._hand_over()  # a thread that queued in run() meanwhile
            with self._draining_lock:
                if not self._queue:  # checked under the flag's lock: a submit now starts a new drain
                    self._draining = False
                    return

    def _hand_over(self) -> None:
        """Wake the first waiting thread, to run the next batch (nobody else would)."""
        try:
            self._queue[0].woken.set()
        except IndexError:
            pass

    def _take(self) -> Iterator[_Pending]:
        for _ in range(self.max_batch):
            try:
                yield self._queue.popleft()
            except IndexError:
                return

    def _run_batch(self, batch: list[_Pending], *, again: bool = True) -> None:
        batch.sort(key=lambda item: item.order)  # same lock order in every process
        try:
            outcomes = self._outcomes(batch)
        except DatabaseConnectionLost as exc:  # nothing was saved: run it again, once, on a new connection
            if again:
                log.info("running a batch of %s operations again on a new connection", len(batch))
                self._run_batch(batch, again=False)
            else:
                self._settle_all(batch, exc)
            return
        except CommitOutcomeUnknown as exc:  # running it again could apply it twice: the callers ask again
            self._settle_all(batch, exc)
            return
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

    def _outcomes(self, batch: list[_Pending]) -> list[tuple[_Pending, bool, Any]]:
        """Run ``batch`` in one transaction: each operation's outcome, known once it has committed."""
        outcomes: list[tuple[_Pending, bool, Any]] = []
        with self.begin() as conn:
            if self.prepare is not None:
                self.prepare(conn, [(item.order, item.op) for item in batch])
            for item in batch:
                try:
                    outcomes.append((item, True, item.op(conn)))
                except QuotaServiceError as exc:
                    outcomes.append((item, False, exc))
        return outcomes

    @staticmethod
    def _settle_all(batch: list[_Pending], exc: Exception) -> None:
        for item in batch:
            item.settle(False, exc)
