"""The HTTP load generator of :mod:`benchmarks.quota_admission`: closed-loop clients as coroutines.

Each client is one keep-alive HTTP/1.1 connection that asks, waits for the answer, and asks again
(releasing what it was given). The clients are spread over a few processes, each running them on
one asyncio loop, with h11 (the sans-I/O HTTP/1.1 library httpcore is built on) for the protocol.
The previous generator (httpx's sync client, one thread per client, 5 processes) spent 2.1-2.7 ms
of CPU a request against 0.4-0.8 ms for this one (side by side against one service, start-up
included; this one's measured stretch alone: 0.13-0.2 ms), on the same 2 cores the service runs
on and several times the service's own 0.3-0.6 ms: the figures then measured the clients as much
as the service. Each worker reports its own CPU per request (``load_generator_cpu_ms_per_request``).

Kept apart, with only light imports, because every worker process imports this module before its
clients start.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11


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


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection to ``base_url`` that sends JSON with a hub token."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path + "api/v1/"
        self.headers = [("Host", parts.netloc), ("Authorization", f"token {token}"),
                        ("Content-Type", "application/json"), ("Connection", "keep-alive")]
        self.connection = h11.Connection(h11.CLIENT)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect (a closed-loop client keeps one connection for the whole run)."""
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        assert self.reader is not None and self.writer is not None
        data = b"" if body is None else json.dumps(body).encode()
        headers = [*self.headers, ("Content-Length", str(len(data)))]
        self.writer.write(self.connection.send(h11.Request(method=method, target=self.prefix + path, headers=headers))
                          + self.connection.send(h11.Data(data=data)) + self.connection.send(h11.EndOfMessage()))
        status, chunks = 0, []
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                received = await self.reader.read(65536)
                self.connection.receive_data(received)
                if not received and self.connection.their_state is not h11.DONE:
                    raise ConnectionError(f"the server closed the connection during {method} {path}")
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.connection.start_next_cycle()
                return status, b"".join(chunks)

    async def close(self) -> None:
        """Close the connection."""
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


@dataclass
class ClientResults:
    """What the clients of one worker process saw."""

    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"admitted": 0, "refused": 0, "errors": 0, "requests": 0})


async def _client_loop(client: KeepAliveClient, path: str, seconds: float, hold: float, out: ClientResults) -> None:
    deadline = time.time() + seconds
    counts = out.counts
    while time.time() < deadline:
        started = time.perf_counter()
        status, body = await client.request("POST", path, {"gpus": 1, "estimated_seconds": 60,
                                                           "request_id": uuid.uuid4().hex})
        out.latencies.append(time.perf_counter() - started)
        counts["requests"] += 1
        if status == 201:
            counts["admitted"] += 1
            await asyncio.sleep(hold)
            await client.request("POST", f"leases/{json.loads(body)['lease']['id']}/release", {})
            counts["requests"] += 1
        elif status == 409:
            counts["refused"] += 1
        else:
            counts["errors"] += 1


async def _run_worker(base_url: str, path: str, tokens: list[str], seconds: float, hold: float,
                      ready: Any, start: Any) -> tuple[ClientResults, float]:
    pool = [KeepAliveClient(base_url, token) for token in tokens]
    for client in pool:
        # warm up outside the clock: the connection, and the service's cache of this token's hub check
        await client.open()
        status, body = await client.request("GET", "me")
        if status != 200:
            raise RuntimeError(f"warm-up GET me answered {status}: {body[:200]!r}")
    ready.put(os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    out = ClientResults()
    cpu_before = _own_cpu_seconds()
    await asyncio.gather(*(_client_loop(client, path, seconds, hold, out) for client in pool))
    cpu = _own_cpu_seconds() - cpu_before
    for client in pool:
        await client.close()
    return out, cpu


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(base_url: str, path: str, tokens: list[str], seconds: float, hold: float, nice: int,
            ready: Any, start: Any, queue: Any) -> None:
    if nice:
        os.nice(nice)
    try:
        out, cpu = asyncio.run(_run_worker(base_url, path, tokens, seconds, hold, ready, start))
    except Exception as exc:  # the parent stops waiting at once, and says why
        ready.put(f"a load generator process failed: {exc!r}")
        queue.put(f"a load generator process failed: {exc!r}")
        raise
    queue.put((out.latencies, out.counts, cpu))


def _unless_failed(item: Any, procs: list[Any]) -> Any:
    if isinstance(item, str):
        for p in procs:
            p.terminate()
        raise RuntimeError(item)
    return item


def run_clients(base_urls: list[str], tokens: list[str], clients: int, seconds: float, hold: float,
                path: str = "leases", processes: int = 2, nice: int = 0) -> dict[str, Any]:
    """Run ``clients`` concurrent closed-loop clients (coroutines spread over ``processes`` processes;
    process ``i`` asks ``base_urls[i % n]``; client ``j`` holds ``tokens[j % len(tokens)]``) for
    ``seconds`` against ``path``; decision counts, latencies and the load generator's own CPU per request. ``nice`` lowers the clients' CPU priority (a harness
    choice: clients on other machines would not compete with the service for its cores)."""
    ctx = multiprocessing.get_context("spawn")
    queue, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    # client j holds token j mod len(tokens) wherever it runs: every user has as many clients as before
    client_tokens = [tokens[j % len(tokens)] for j in range(clients)]
    procs = [ctx.Process(target=_worker, args=(base_urls[i % len(base_urls)], path, client_tokens[i::processes],
                                               seconds, hold, nice, ready, start, queue))
             for i in range(min(processes, clients))]
    for p in procs:
        p.start()
    for _ in procs:  # the clock starts when every client of every worker is connected and waits
        _unless_failed(ready.get(timeout=120), procs)
    start.set()
    results = [_unless_failed(queue.get(timeout=seconds + 120), procs) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    latencies = [x for lat, _, _ in results for x in lat]
    counts = {key: sum(c[key] for _, c, _ in results) for key in ("admitted", "refused", "errors", "requests")}
    cpu = sum(seconds_used for _, _, seconds_used in results)
    figures = latency_figures(latencies, counts["admitted"] + counts["refused"], seconds)
    return {**counts, **figures, "requests_per_s": round(counts["requests"] / seconds, 1),
            "load_generator_processes": len(procs), "load_generator_nice": nice,
            "load_generator_cpu_ms_per_request": round(1000 * cpu / counts["requests"], 3) if counts["requests"] else None}
