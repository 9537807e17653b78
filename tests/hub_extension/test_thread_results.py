"""Results settled in other threads reach the event loop, many per wake-up (handlers/thread_results.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from hub_extension.errors import LeaseNotFound
from hub_extension.handlers.thread_results import ThreadResults, thread_result


def _settle_in_thread(futures: list[Future[int]], error_at: int | None = None) -> threading.Thread:
    def settle() -> None:
        for i, future in enumerate(futures):
            if i == error_at:
                future.set_exception(LeaseNotFound("You have no lease 'x'."))
            else:
                future.set_result(i)

    thread = threading.Thread(target=settle)
    thread.start()
    return thread


def test_results_and_errors_reach_their_waiters() -> None:
    async def main() -> list[object]:
        futures: list[Future[int]] = [Future() for _ in range(5)]
        waiters = [thread_result(f) for f in futures]
        _settle_in_thread(futures, error_at=3).join()
        return await asyncio.gather(*waiters, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[:3] == [0, 1, 2] and outcomes[4] == 4
    assert isinstance(outcomes[3], LeaseNotFound)


def test_a_batch_settled_together_wakes_the_loop_once(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*args: object) -> asyncio.Handle:
            nonlocal wakes
            wakes += 1
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
        results = ThreadResults(loop)
        futures: list[Future[int]] = [Future() for _ in range(20)]
        waiters = [results.wait_for(f) for f in futures]
        _settle_in_thread(futures).join()  # the loop is not running meanwhile: all 20 share a wake-up
        return list(await asyncio.gather(*waiters)), wakes

    values, wakes = asyncio.run(main())
    assert values == list(range(20))
    assert wakes == 1


def test_a_cancelled_waiter_is_skipped_and_later_results_still_arrive() -> None:
    async def main() -> int:
        first, second = Future[int](), Future[int]()
        cancelled, waiting = thread_result(first), thread_result(second)
        cancelled.cancel()
        _settle_in_thread([first, second]).join()
        return await waiting

    assert asyncio.run(main()) == 1
