"""Whether a daemon's child may act for a caller of the same user: same namespaces, root, groups, cgroup and confinement.

The daemons (the tracking agent, the trial host, the warm sweep driver) check only the caller's uid
(``SO_PEERCRED``). A process of that uid may still see another filesystem (``unshare -m``, a
PrivateTmp hub, bwrap, rootless podman), run with other groups, in another cgroup, or confined
(seccomp, no-new-privileges, fewer capabilities). A child acting for it there would open the
daemon's files, not the caller's, and would let a sandboxed caller out. So each child compares the
caller's ``/proc/<pid>`` with its own, takes on the caller's lower resource limits, and refuses
whatever it cannot take on: the caller then runs the work in its own process, which is always safe.
"""

from __future__ import annotations

import errno
import os
import resource

#: The namespaces a child must share with its caller (``/proc/<pid>/ns/<name>``): paths, users, processes, loopback.
NAMESPACES = ("mnt", "user", "pid", "net", "ipc", "uts", "cgroup")
#: Lines of ``/proc/<pid>/status`` that must be equal: groups and confinement, which a child cannot take on.
STATUS_FIELDS = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
#: Every resource limit this Python knows (``resource.RLIMIT_*``).
LIMITS = tuple(sorted((getattr(resource, name), name) for name in dir(resource) if name.startswith("RLIMIT_")))


def unlike_caller(pid: int) -> str | None:
    """Why this process cannot act for process ``pid`` (what differs, or what it could not read); None when it can.

    Compares the namespaces, the root folder, the groups and confinement (``STATUS_FIELDS``), the
    cgroup and the security label. Call it in the daemon's child, after ``SO_PEERCRED`` gave ``pid``.
    """
    try:
        differing = [f"{name} namespace" for name in NAMESPACES if _identity(f"{pid}/ns/{name}") != _identity(f"self/ns/{name}")]
        if _identity(f"{pid}/root") != _identity("self/root"):
            differing.append("root folder")
        theirs, ours = _status(pid), _status("self")
        differing += [name.lower() for name in STATUS_FIELDS if theirs.get(name) != ours.get(name)]
        differing += [name for name in ("cgroup", "attr/current") if _read(f"{pid}/{name}") != _read(f"self/{name}")]
    except OSError as exc:  # a process that ended, or /proc hidden (hidepid): nothing is known, so nothing is done for it
        return f"cannot read the caller's process: {exc}"
    if differing:
        return f"your process differs from the daemon's ({', '.join(differing)})"
    return None


def become_caller(pid: int) -> None:
    """Make this forked child fit to act for process ``pid``: OSError (with what differs) when it cannot (``unlike_caller``,
    or a limit it cannot take on); else its resource limits are ``pid``'s."""
    if (unlike := unlike_caller(pid)) is not None:
        raise OSError(unlike)
    take_limits(pid)


def take_limits(pid: int) -> None:
    """Set this process's resource limits to process ``pid``'s (``prlimit --nofile=...``, ``ulimit -v``).

    Lowering is always allowed; raising a hard limit is not, and raises OSError (the caller must then
    run the work itself). Read from the kernel (``prlimit``), for the same user only.
    """
    for number, name in LIMITS:
        theirs = resource.prlimit(pid, number)
        if theirs != resource.getrlimit(number):
            try:
                resource.setrlimit(number, theirs)
            except (ValueError, OSError) as exc:
                raise OSError(f"cannot take on your {name} {theirs}: {exc}") from exc


def _identity(name: str) -> tuple[int, int]:
    info = os.stat(f"/proc/{name}")
    return info.st_dev, info.st_ino


def _status(pid: int | str) -> dict[str, str]:
    fields = (line.partition(":") for line in _read(f"{pid}/status").splitlines())
    return {name: value.strip() for name, _sep, value in fields if name in STATUS_FIELDS}


def _read(name: str) -> str:
    try:
        with open(f"/proc/{name}", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError as exc:
        if name.endswith("attr/current") and exc.errno == errno.EINVAL:  # no security module labels processes here
            return ""
        raise
