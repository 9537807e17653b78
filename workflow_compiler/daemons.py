"""The warm helpers nbscale leaves running per ``NBSCALE_HOME``: list them, stop them.

The warm sweep driver (``sweep/warm_driver.py``), the tracking agent (``tracking/agent.py``), the
trial host (``sweep/trial_host.py``) and the warm Ray head (``sweep/ray_head.py``) each keep
a pid file and a Unix socket under ``$NBSCALE_HOME/agent/`` and leave by themselves after
``NBSCALE_TRACKING_AGENT_IDLE`` idle seconds; ``nbscale daemons stop`` ends them now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .store import nbscale_home, pid_alive


@dataclass(frozen=True, kw_only=True)
class Daemon:
    """One warm helper of an ``NBSCALE_HOME``, as its pid file describes it."""

    name: str
    pid_file: Path
    pid: int | None
    running: bool


def _kinds() -> list[tuple[str, str, Callable[[Path], int | None]]]:
    """(name, pid file under agent/, stop function) of each kind of helper."""
    from .sweep import ray_head, trial_host, warm_driver
    from .tracking import agent

    # the sweep driver first: its sweeps hold leases on the Ray head and use the host and the agent
    return [("sweep driver", warm_driver.PID_NAME, warm_driver.stop), ("tracking agent", "agent.pid", agent.stop),
            ("trial host", trial_host.PID_NAME, trial_host.stop), ("ray head", ray_head.PID_NAME, ray_head.stop)]


def list_daemons(home: Path | None = None) -> list[Daemon]:
    """Every kind of helper of ``home`` (default ``$NBSCALE_HOME``), running or not."""
    home = home or nbscale_home()
    daemons = []
    for name, pid_name, _ in _kinds():
        pid_file = home / "agent" / pid_name
        text = pid_file.read_text().strip() if pid_file.is_file() else ""
        pid = int(text) if text.isdigit() else None
        daemons.append(Daemon(name=name, pid_file=pid_file, pid=pid, running=pid_alive(pid)))
    return daemons


def stop_daemons(home: Path | None = None) -> list[tuple[str, int]]:
    """Ask each running helper of ``home`` to leave and wait for it; (name, pid) of those stopped."""
    home = home or nbscale_home()
    stopped = []
    for name, _, stop in _kinds():
        pid = stop(home)
        if pid:
            stopped.append((name, pid))
    return stopped
