"""The HTTP load generator of :mod:`benchmarks.quota_admission`: client threads spread over processes.

Kept apart, with only light imports, because every worker process imports this module before its
clients start.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
import uuid
from typing import Any

import httpx


def latency_figures(latencies: list[float], decisions: int, seconds: float) -> dict[str, Any]:
    """Decisions per second and p50/p99 latency (ms) of one measurement."""
    latencies = sorted(latencies)
    return {
        "decisions": decisions,
        "seconds": seconds,
        "decisions_per_s": round(decisions / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1) if latencies else None,
    }


def _client_loop(base_url: str, path: str, token: str, seconds: float, hold: float, warm: threading.Barrier,
                 start: Any, out: list[Any]) -> None:
    http = httpx.Client(base_url=base_url + "api/v1/", timeout=60, headers={"Authorization": f"token {token}"})
    # warm up outside the clock: the connection, and the service's cache of this token's hub check
    http.get("me").raise_for_status()
    warm.wait()
    start.wait()
    deadline = time.time() + seconds
    latencies: list[float] = []
    counts = {"admitted": 0, "refused": 0, "errors": 0, "requests": 0}
    while time.time() < deadline:
        started = time.perf_counter()
        answer = http.post(path, json={"gpus": 1, "estimated_seconds": 60, "request_id": uuid.uuid4().hex})
        latencies.append(time.perf_counter() - started)
        counts["requests"] += 1
        if answer.status_code == 201:
            counts["admitted"] += 1
            time.sleep(hold)
            http.post(f"leases/{answer.json()['lease']['id']}/release", json={})
            counts["requests"] += 1
        elif answer.status_code == 409:
            counts["refused"] += 1
        else:
            counts["errors"] += 1
    http.close()
    out.append((latencies, counts))


def _worker(base_url: str, path: str, tokens: list[str], threads: int, seconds: float, hold: float,
            ready: Any, start: Any, queue: Any) -> None:
    out: list[Any] = []
    warm = threading.Barrier(threads + 1)
    pool = [threading.Thread(target=_client_loop,
                             args=(base_url, path, tokens[i % len(tokens)], seconds, hold, warm, start, out))
            for i in range(threads)]
    for t in pool:
        t.start()
    warm.wait()
    ready.put(os.getpid())
    for t in pool:
        t.join()
    queue.put(out)


def run_clients(base_urls: list[str], tokens: list[str], clients: int, seconds: float, hold: float,
                path: str = "leases", processes: int = 5) -> dict[str, Any]:
    """Run ``clients`` concurrent clients (threads spread over ``processes`` processes, so the
    benchmark's own GIL is not the bottleneck; process ``i`` asks ``base_urls[i % n]``) for
    ``seconds`` against ``path``; decision counts and latencies."""
    ctx = multiprocessing.get_context("spawn")
    queue, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = [clients // processes + (i < clients % processes) for i in range(processes)]
    procs = [ctx.Process(target=_worker, args=(base_urls[i % len(base_urls)], path, tokens[i::processes] or tokens, n,
                                               seconds, hold, ready, start, queue))
             for i, n in enumerate(per) if n]
    for p in procs:
        p.start()
    for _ in procs:  # the clock starts when every client of every worker is connected and waits
        ready.get(timeout=120)
    start.set()
    results = [item for _ in procs for item in queue.get(timeout=seconds + 120)]
    for p in procs:
        p.join(timeout=30)
    latencies = [x for lat, _ in results for x in lat]
    counts = {key: sum(c[key] for _, c in results) for key in ("admitted", "refused", "errors", "requests")}
    figures = latency_figures(latencies, counts["admitted"] + counts["refused"], seconds)
    return {**counts, **figures, "requests_per_s": round(counts["requests"] / seconds, 1)}
