"""The test hub (``hub_extension.devhub.LocalHub``): a set-up that fails leaves no process behind.

The quota fixtures once left a ``python -m hub_extension`` service (and the proxy) running for the
rest of the machine's day when the hub's start timed out or failed.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from hub_extension.devhub import LocalHub


class _FailsOnceUp(LocalHub):
    """A hub whose set-up fails at the last moment: the proxy routes and the quota service answers."""

    seen: dict[int, str]

    def _service_answers(self) -> bool:
        if not super()._service_answers():
            return False
        assert self.process is not None
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.seen = {child.pid: " ".join(child.cmdline()) for child in children}
        raise RuntimeError("set-up failed on purpose")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        return True


def test_a_hub_whose_set_up_fails_leaves_no_hub_proxy_or_service_running(tmp_path: Path) -> None:
    hub = _FailsOnceUp(tmp_path, start_timeout=180)
    with pytest.raises(RuntimeError, match="on purpose"):
        hub.start()
    assert hub.process is not None
    assert any("hub_extension" in command for command in hub.seen.values()), f"the quota service never ran: {hub.seen}"
    left = {pid: command for pid, command in hub.seen.items() if not _gone(pid)}
    assert _gone(hub.process.pid) and not left, f"left running: {left}"


def test_a_hub_that_dies_has_its_proxy_and_service_ended_by_stop(tmp_path: Path) -> None:
    """A hub killed (the test runner's timeout, an OOM kill) cannot stop its children: ``stop`` ends them by PID."""
    hub = LocalHub(tmp_path).start()
    try:
        assert hub.process is not None
        children = {child.pid: " ".join(child.cmdline()) for child in psutil.Process(hub.process.pid).children(recursive=True)}
        hub.process.kill()
        hub.process.wait(timeout=30)
        assert any("hub_extension" in command for command in children.values())
        assert any(not _gone(pid) for pid in children), "nothing outlived the hub: this test would prove nothing"
    finally:
        hub.stop()
    left = {pid: command for pid, command in children.items() if not _gone(pid)}
    assert not left, f"left running: {left}"
