"""A process's environment as another process of its user takes it on: from ``/proc``, plus what it changed since.

The trial host's children (``trial_host.py``) and the warm sweep driver's (``warm_driver_daemon.py``)
each become a process of the same user that connected to them. Its environment does not cross the
socket whole, secrets and all: the kernel shows ``/proc/<pid>/environ`` (the one it started with)
only to its own user, and the process sends only what it changed since.
"""

from __future__ import annotations

import os


def environ_changes() -> tuple[dict[str, str], list[str]]:
    """What this process changed in its environment since it started (Ray sets a few variables at run time):
    the variables set or changed, and those removed. The rest the serving child reads from ``/proc``.

    Both sides read the same ``/proc/<pid>/environ``, so the child ends with exactly this
    ``os.environ`` even if something had overwritten that memory (a long process title): then
    more travels in the request, to a daemon already known to run as this user.
    """
    started = start_environ(os.getpid())
    changed = {k: v for k, v in os.environ.items() if started.get(k) != v}
    return changed, sorted(set(started) - set(os.environ))


def start_environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with, from ``/proc/<pid>/environ`` (readable by its own user only)."""
    with open(f"/proc/{pid}/environ", "rb") as handle:
        entries = handle.read().split(b"\0")
    pairs = (os.fsdecode(e).partition("=") for e in entries if e)
    return {name: value for name, sep, value in pairs if sep}


def take_on_environ(pid: int, changed: dict[str, str], removed: list[str]) -> None:
    """Make this process's environment that of process ``pid``: its start-up environment from ``/proc``
    (its secrets never cross a socket), then what it sent as changed (``environ_changes``)."""
    environ = start_environ(pid)
    environ.update(changed)
    for name in removed:
        environ.pop(name, None)
    os.environ.clear()
    os.environ.update(environ)
