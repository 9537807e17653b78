"""The warm helpers nbscale leaves running per ``NBSCALE_HOME``: list them, stop them.

The warm sweep driver (``sweep/warm_driver.py``), the tracking agent (``tracking/agent.py``), the
trial host (``sweep/trial_host.py``) and the warm Ray head (``sweep/ray_head.py``) each keep
a pid file and a Unix socket under ``$NBSCALE_HOME/agent/`` and leave by themselves after
``NBSCALE_TRACKING_AGENT_IDLE`` idle seconds; ``nbscale daemons stop`` ends them now.

A helper asked to stop finishes what it serves first (the driver its running sweeps, the Ray head
the sweeps that lease it), so ``stop_daemons`` stops them one at a time, the driver first, says
what it waits for, and reports each as stopped only once its process has exited.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store import nbscale_home, pid_alive

#: Seconds a helper that serves nothing may take to exit once asked.
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Daemon:
    """One warm helper of an ``NBSCALE_HOME``, as its pid file describes it."""

    name: str
    pid_file: Path
    pid: int | None
    running: bool


@dataclass(frozen=True, kw_only=True)
class StopOutcome:
    """What became of one running helper that ``stop_daemons`` asked to leave."""

    name: str
    pid: int
    #: ``stopped`` (its process has exited), ``running`` (it did not exit in time) or ``leaving``
    #: (Ctrl-C while it finished its sweeps: it leaves once they end; the helpers after it were not asked)
    state: str


@dataclass(frozen=True, kw_only=True)
class _Kind:
    name: str
    pid_name: str
    socket_path: Callable[[Path], Path | None]
    serving: Callable[[int, Path], str] = lambda _pid, _path: ""  # what it finishes before it leaves ("" for nothing)


def _running_sweeps(pid: int, _path: Path) -> str:
    """The driver's children are the sweeps it runs."""
    import psutil

    try:
        count = len(psutil.Process(pid).children())
    except psutil.Error:
        return ""
    return f"{count} running sweep{'s' if count != 1 else ''}" if count else ""


def _leases(_pid: int, path: Path) -> str:
    from .sweep import ray_head

    count = ray_head.lease_count(path)
    return f"{count} sweep{'s' if count != 1 else ''} connected to it" if count else ""


def _kinds() -> list[_Kind]:
    """Each kind of helper, the sweep driver first: its sweeps hold leases on the Ray head and use the host and the agent."""
    from .sweep import ray_head, trial_host, warm_driver
    from .tracking import agent

    return [_Kind(name="sweep driver", pid_name=warm_driver.PID_NAME, socket_path=warm_driver.socket_path, serving=_running_sweeps),
            _Kind(name="tracking agent", pid_name="agent.pid", socket_path=agent.socket_path),
            _Kind(name="trial host", pid_name=trial_host.PID_NAME, socket_path=trial_host.socket_path),
            _Kind(name="ray head", pid_name=ray_head.PID_NAME, socket_path=ray_head.socket_path, serving=_leases)]


def _pid_in(pid_file: Path) -> int | None:
    text = pid_file.read_text().strip() if pid_file.is_file() else ""
    return int(text) if text.isdigit() else None


def _is_helper(pid: int | None, path: Path | None) -> bool:
    """``pid`` is alive and is the helper started for the socket ``path`` (its command line names it): a pid file a
    killed helper left may name an unrelated process of the user's now, which must be neither listed nor waited for."""
    if pid is None or path is None or not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.fsencode(str(path)) in argv


def list_daemons(home: Path | None = None) -> list[Daemon]:
    """Every kind of helper of ``home`` (default ``$NBSCALE_HOME``), running or not."""
    home = home or nbscale_home()
    daemons = []
    for kind in _kinds():
        pid_file = home / "agent" / kind.pid_name
        pid = _pid_in(pid_file)
        daemons.append(Daemon(name=kind.name, pid_file=pid_file, pid=pid, running=_is_helper(pid, kind.socket_path(home))))
    return daemons


def stop_daemons(home: Path | None = None, *, on_wait: Callable[[str], None] = lambda _: None,
                 timeout: float = STOP_TIMEOUT_S) -> list[StopOutcome]:
    """Ask each running helper of ``home`` to leave, one at a time, and wait for its process to exit.

    A helper that still serves sweeps is waited for as long as they run, after ``on_wait`` has been
    told which (a KeyboardInterrupt leaves it to leave once they end); any other gets ``timeout``
    seconds, after which it is reported as not stopped.
    """
    from .tracking.daemon import ask_to_stop

    home = home or nbscale_home()
    outcomes = []
    for kind in _kinds():
        pid, path = _pid_in(home / "agent" / kind.pid_name), kind.socket_path(home)
        if pid is None or path is None or not _is_helper(pid, path):
            continue
        serving = kind.serving(pid, path)
        try:
            ask_to_stop(path)
            if serving:
                on_wait(f"waiting for the {kind.name} (pid {pid}) to finish its {serving} (Ctrl-C to leave it running)")
            _wait_for_exit(pid, None if serving else time.monotonic() + timeout)
        except KeyboardInterrupt:
            outcomes.append(StopOutcome(name=kind.name, pid=pid, state="leaving"))
            break
        outcomes.append(StopOutcome(name=kind.name, pid=pid, state="running" if pid_alive(pid) else "stopped"))
    return outcomes


def _wait_for_exit(pid: int, deadline: float | None) -> None:
    """Until ``pid`` has exited, or ``deadline`` (monotonic; None: no limit)."""
    while pid_alive(pid) and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.05)
