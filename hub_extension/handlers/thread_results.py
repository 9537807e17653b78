"""Store work off the event loop: blocking calls in a pool of threads, and the group commit's results
handed back to the loop in batches, one wake-up for many.

The group commit settles a whole batch of decisions one after the other in its thread. With
``asyncio.wrap_future`` every one of them wakes the event loop on its own (a write to the loop's
self-pipe, a GIL hand-over and an epoll round each); here the results that settle while a wake-up is
pending ride along with it, and the loop hands them all out in one callback.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

from tornado.ioloop import IOLoop

T = TypeVar("T")


class ThreadResults:
    """Awaitable results of :class:`concurrent.futures.Future` objects settled in other threads, for one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # not kept alive by the table of loops below
        self._settled: deque[tuple[Future[Any], asyncio.Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def wait_for(self, future: Future[T]) -> asyncio.Future[T]:
        """An asyncio future of this loop that gets ``future``'s result or exception (call on the loop)."""
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: self._on_settled(done, waiter))
        return waiter

    def _on_settled(self, done: Future[Any], waiter: asyncio.Future[Any]) -> None:
        # in the settling thread: queue it, and wake the loop only if no wake-up is on its way
        self._settled.append((done, waiter))
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        loop = self._loop()
        if loop is not None and not loop.is_closed():  # a closed loop has nobody left to answer
            loop.call_soon_threadsafe(self._hand_out)

    def _hand_out(self) -> None:
        # cleared first: a result queued from now on either is handed out below or wakes the loop again
        with self._lock:
            self._wake_pending = False
        while self._settled:
            done, waiter = self._settled.popleft()
            if waiter.done():  # its handler was cancelled
                continue
            error = done.exception()
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(done.result())


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThreadResults] = weakref.WeakKeyDictionary()


def thread_result(future: Future[T]) -> asyncio.Future[T]:
    """Await ``future`` (settled in another thread) on the running loop, with wake-ups shared in batches."""
    loop = asyncio.get_running_loop()
    results = _BY_LOOP.get(loop)
    if results is None:
        results = _BY_LOOP[loop] = ThreadResults(loop)
    return results.wait_for(future)


@cache
def _database_threads() -> ThreadPoolExecutor:
    # the store blocks (locks, commits): in threads, the event loop keeps reading requests meanwhile;
    # lease writes skip this pool: the group commit's own thread decides them (store.submit_admit)
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="quota-db")


async def in_database_thread(func: Callable[..., T], *args: Any) -> T:
    """Run the blocking store call ``func(*args)`` off the event loop (reads, and the admin's writes)."""
    return await IOLoop.current().run_in_executor(_database_threads(), func, *args)
