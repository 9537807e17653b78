"""SIGTERM, SIGINT and the step's own deadline: they stop the notebook and the run ends KILLED.

While the guard is armed, the first signal stops the step with ``StepInterrupted``, which unwinds
papermill (it saves the partial notebook on the way out) and nbclient (it shuts the kernel down).
Later signals are only recorded, so that clean-up and MLflow logging are not cut short.

Where the exception starts matters. In plain code the handler raises it at once. While an asyncio
loop runs (nbclient talking to the kernel), the handler only records the signal and wakes the cell's
waiter: raised there, it would land in whichever task happened to be running, often nbclient's
output poller, and asyncio keeps a ``BaseException`` as that task's result. Nobody awaits the poller
while the cell runs, so the step would hang until the kernel answered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

_EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGALRM: 143}


class StepInterrupted(BaseException):  # BaseException: notebook-side `except Exception` must not swallow it
    """The step was told to stop: cancelled, terminated, or past its deadline."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


class InterruptGuard:
    """Context manager: turn SIGTERM/SIGINT (and an optional deadline) into ``StepInterrupted`` once."""

    def __init__(self, timeout_seconds: int | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.interrupted: StepInterrupted | None = None
        self._armed = False
        self._wake: Callable[[], None] | None = None
        self._previous: dict[int, object] = {}

    def _reason(self, signum: int) -> str:
        if signum == signal.SIGALRM:
            return f"timed out after {self.timeout_seconds} s (timeout_seconds)"
        if signum == signal.SIGINT:
            return "interrupted (SIGINT): the run was cancelled"
        return "terminated (SIGTERM): the run was cancelled or hit its deadline"

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.interrupted is not None:
            log.warning("signal %s received again while stopping; finishing clean-up first", signum)
            return
        self.interrupted = StepInterrupted(self._reason(signum), _EXIT_CODES.get(signum, 143))
        log.warning("stopping: %s", self.interrupted.reason)
        if not self._armed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # plain code: stop right here
            self._armed = False
            raise self.interrupted from None
        if self._wake is not None:  # a cell is running: its waiter raises (see the module docstring)
            loop.call_soon_threadsafe(self._wake)
        # else: kernel start-up or shutdown; `check()` raises before the next cell

    def check(self) -> None:
        """Raise the recorded interrupt if it has not been raised yet (once)."""
        if self._armed and self.interrupted is not None:
            self._armed = False
            raise self.interrupted

    @contextmanager
    def waking(self, wake: Callable[[], None]) -> Iterator[None]:
        """While inside, a signal calls ``wake`` in the running loop; the waiter then calls ``check()``."""
        self._wake = wake
        try:
            yield
        finally:
            self._wake = None

    def __enter__(self) -> InterruptGuard:  # noqa: PYI034 - final class in practice
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            self._previous[signum] = signal.signal(signum, self._handle)
        self._armed = True
        if self.timeout_seconds:
            signal.setitimer(signal.ITIMER_REAL, float(self.timeout_seconds))
        return self

    def disarm(self) -> None:
        """From now on signals are recorded, not raised (the run is finishing)."""
        self._armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.disarm()

    def restore(self) -> None:
        """Put back the signal handlers that were there before."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
