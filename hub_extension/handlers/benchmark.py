"""Endpoints served only to ``benchmarks.quota_admission`` (``$NBSCALE_QUOTA_BENCHMARK_ENDPOINTS=1``).

* ``POST benchmark/noop``: the load generator's ceiling, an admission request checked like a real one
  and refused without touching the database;
* ``GET benchmark/timings``: where a request's time goes inside the service, measured since the last
  call (which starts a new measurement): each request's time from its parsed headers to its answer
  written; of an admission, the wait from handing it to the group commit to its result back on the
  loop; the event loop's busy stretches between two polls (a request that arrives meanwhile waits
  that long before it is even read) and the garbage collector's pauses.

Never served in production: the timings would cost every request a little, and say nothing a user needs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from ..schemas import AdmissionBody
from .base import APIHandler

#: serves ``api/v1/benchmark/...`` (the load generator's ceiling, the timings); never set in production
BENCHMARK_ENV = "NBSCALE_QUOTA_BENCHMARK_ENDPOINTS"


def benchmark_endpoints_enabled() -> bool:
    """Whether this process serves the benchmark endpoints."""
    return os.environ.get(BENCHMARK_ENV) == "1"


def _percentiles(seconds: list[float]) -> dict[str, Any]:
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "total_ms": round(1000 * sum(ordered), 1),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max_ms": round(1000 * ordered[-1], 2)}


class ServiceTimings:
    """Request times, the event loop's busy stretches and GC pauses, collected until :meth:`take`."""

    def __init__(self) -> None:
        self.requests: list[float] = []
        self.decisions: list[float] = []
        self.busy: list[float] = []
        self.gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started = 0.0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start collecting: a GC callback, and a wrapper around the loop's selector (polls are timed)."""
        gc.callbacks.append(self._on_gc)
        selector = loop._selector  # type: ignore[attr-defined]
        poll = selector.select
        returned = [time.perf_counter()]

        def timed_select(timeout: float | None = None) -> Any:
            self.busy.append(time.perf_counter() - returned[0])
            events = poll(timeout)
            returned[0] = time.perf_counter()
            return events

        selector.select = timed_select

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses[info["generation"]].append(time.perf_counter() - self._gc_started)

    def take(self) -> dict[str, Any]:
        """The figures since the last call, and a new measurement started."""
        figures = {"request_ms": _percentiles(self.requests), "decision_wait_ms": _percentiles(self.decisions),
                   "event_loop_busy_ms": _percentiles(self.busy),
                   "gc_pause_ms": {f"generation_{gen}": _percentiles(p) for gen, p in self.gc_pauses.items()}}
        self.requests, self.decisions, self.busy = [], [], []
        self.gc_pauses = {0: [], 1: [], 2: []}
        return figures


class BenchmarkNoopHandler(APIHandler):
    """POST ``benchmark/noop``: an admission request checked like a real one (token, scope, body) and
    refused without touching the database. Its rate is the load generator's ceiling in
    ``benchmarks.quota_admission``."""

    def post(self) -> None:
        self.require_user()
        self.body_as(AdmissionBody)
        self.write_json({"message": "benchmark no-op: nothing was admitted", "errors": [], "limit": "none"},
                        status=409)


class BenchmarkTimingsHandler(APIHandler):
    """GET ``benchmark/timings``: the service's timings since the last call (any authenticated user)."""

    def get(self) -> None:
        self.require_user()
        self.write_json(self.settings["benchmark_timings"].take())


def benchmark_routes(api: str) -> list[tuple[str, type, dict[str, object]]]:
    """The benchmark endpoints under ``api`` (the REST API's prefix), or none when not enabled."""
    if not benchmark_endpoints_enabled():
        return []
    return [(api + "benchmark/noop", BenchmarkNoopHandler, {}), (api + "benchmark/timings", BenchmarkTimingsHandler, {})]
