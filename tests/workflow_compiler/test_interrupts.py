"""InterruptGuard: where a stopping signal turns into StepInterrupted, in plain code and under asyncio."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from workflow_compiler.runtime.interrupts import InterruptGuard, StepInterrupted


def test_plain_code_stops_at_once_and_later_signals_are_only_recorded() -> None:
    guard = InterruptGuard()
    try:
        with pytest.raises(StepInterrupted) as stopped, guard:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the handler did not raise")
        assert stopped.value.exit_code == 143
        os.kill(os.getpid(), signal.SIGINT)  # while the step finishes: recorded, not raised
        guard.check()
        assert guard.interrupted is stopped.value
    finally:
        guard.restore()


def test_a_signal_inside_another_task_wakes_the_waiting_cell() -> None:
    """The hang this guards against: the handler runs inside a helper task's step (nbclient's output poller)."""
    guard = InterruptGuard()
    steps_after_signal = []

    async def poller() -> None:  # stands for nbclient's output poller: handles output when the signal comes
        os.kill(os.getpid(), signal.SIGTERM)
        steps_after_signal.append("poller went on")
        await asyncio.sleep(3600)

    async def cell() -> None:
        stop = asyncio.Event()
        with guard.waking(stop.set):
            helper = asyncio.ensure_future(poller())
            await asyncio.wait_for(stop.wait(), timeout=10)  # a TimeoutError here is the hang
            helper.cancel()
        guard.check()

    try:
        with pytest.raises(StepInterrupted, match="SIGTERM"), guard:
            asyncio.run(cell())
    finally:
        guard.restore()
    assert steps_after_signal == ["poller went on"]  # the helper task was not the one to stop


def test_a_signal_while_no_cell_waits_is_raised_by_the_next_check() -> None:
    guard = InterruptGuard()

    async def kernel_start() -> None:  # no waiter: the step must not stop half-way through a start-up
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0)

    try:
        with guard:
            asyncio.run(kernel_start())
            assert guard.interrupted is not None
            with pytest.raises(StepInterrupted, match="SIGINT") as stopped:
                guard.check()
            assert stopped.value.exit_code == 130
            guard.check()  # once only
    finally:
        guard.restore()
