"""What :mod:`benchmarks.quota_admission` measures on the service's side of a run: its CPU per request
(from ``/proc``, by thread) and its own timings (``api/v1/benchmark/timings``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from hub_extension.devhub import LocalHub


def service_pid(hub: LocalHub) -> int | None:
    """The hub-managed quota service's process id (a child of the hub whose command names it)."""
    assert hub.process is not None
    for children in Path(f"/proc/{hub.process.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            if b"hub_extension" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 where /proc cannot tell)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int | None) -> dict[str, float]:
    """CPU seconds of ``pid``'s event loop (its main thread) and of all its other threads together
    (the database: the group commit's and the store's threads)."""
    loop = other = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        if task.name == str(pid):
            loop += _stat_cpu(task / "stat")
        else:
            other += _stat_cpu(task / "stat")
    return {"event_loop": loop, "other_threads": other}


def with_service_cpu(pid: int | None, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s figures, with the service's CPU per request over it (all threads, and by thread)."""
    before, threads_before = cpu_seconds(pid), thread_cpu_seconds(pid)
    figures = measure()
    used = cpu_seconds(pid) - before
    threads = {name: seconds - threads_before[name] for name, seconds in thread_cpu_seconds(pid).items()}
    requests = figures["requests"]
    # the service's CPU per request: what a loaded machine distorts least
    return {**figures, "service_cpu_s": round(used, 2),
            "service_cpu_ms_per_request": round(1000 * used / requests, 3) if requests else None,
            # threads that ended during the run (a pool's) are missing here, not in the total
            "service_cpu_ms_per_request_by_thread": {
                name: round(1000 * seconds / requests, 3) if requests else None for name, seconds in threads.items()}}


def service_timings(url: str, token: str) -> dict[str, Any]:
    """The service's own timings since the last call (``api/v1/benchmark/timings``; each call starts anew):
    request times inside the service, the event loop's busy stretches and the GC's pauses."""
    answer = httpx.get(url + "api/v1/benchmark/timings", headers={"Authorization": f"token {token}"}, timeout=60)
    if answer.status_code == 404:  # a service from before the endpoint (a baseline)
        return {}
    answer.raise_for_status()
    return dict(answer.json())


def with_service_timings(url: str, token: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s figures, with what the service timed itself over it (``inside_the_service``)."""
    service_timings(url, token)  # starts the service's measurement with this one
    figures = measure()
    return {**figures, "inside_the_service": service_timings(url, token)}
