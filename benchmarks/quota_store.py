"""The quota store alone, in-process (no HTTP, no auth): admission decisions per second on SQLite and
Postgres, and on a database that already holds a long history. Used by :mod:`benchmarks.quota_admission`.

50 threads (10 per user, 5 users with a limit of 4 GPUs) ask for 1 GPU; an admitted thread holds it
for ``hold`` seconds and releases it. Besides wall-clock decisions per second, each run reports
decisions per CPU-second of this process, which a loaded machine does not distort as much, and on
Postgres per CPU-second of this process and the server together (a decision's work is in both).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.quota_clients import latency_figures
from hub_extension.admin import set_policy
from hub_extension.db import make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.driver_sql import sqlite_statement
from hub_extension.store import AdmissionRequest, Caller, QuotaStore, utcnow

USERS, LIMIT = 5, 4
BENCH_USERS = [f"bench-{i}" for i in range(USERS)]


def open_store(url: str, *, fresh: bool = True) -> QuotaStore:
    """A migrated store at ``url`` with the benchmark users' limits (Postgres tables dropped first if ``fresh``)."""
    engine = make_engine(url, **({"pool_size": 60, "max_overflow": 10} if url.startswith("postgresql") else {}))
    if fresh and url.startswith("postgresql"):
        drop_quota_schema(engine)
    upgrade_database(engine)
    store = QuotaStore(engine)
    for user in BENCH_USERS:
        # a budget too large to refuse anything, so that every decision computes the GPU-hour window
        set_policy(store, "bench", "user", user, {"max_gpus": LIMIT, "gpu_hours_budget": 1e6})
    return store


def run_store_only(store: QuotaStore, clients: int, seconds: float, hold: float) -> dict[str, Any]:
    """``clients`` threads admitting and releasing against ``store`` for ``seconds``."""
    callers = [Caller(name=user) for user in BENCH_USERS]
    latencies: list[float] = []
    counts = {"admitted": 0, "refused": 0}
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client(caller: Caller) -> None:
        mine, local = [], {"admitted": 0, "refused": 0}
        while time.time() < deadline:
            started = time.perf_counter()
            result = store.admit(caller, AdmissionRequest(gpus=1, pool="default", concurrency=1,
                                                          estimated_seconds=60, request_id=uuid.uuid4().hex))
            mine.append(time.perf_counter() - started)
            if result.lease:
                local["admitted"] += 1
                time.sleep(hold)
                store.release(caller, result.lease["id"])
            else:
                local["refused"] += 1
        with lock:
            latencies.extend(mine)
            for key, value in local.items():
                counts[key] += value

    threads = [threading.Thread(target=client, args=(callers[i % USERS],)) for i in range(clients)]
    port = store.engine.url.port if store.engine.dialect.name == "postgresql" else None
    server = postgres_cpu_seconds(port) if port else 0.0
    cpu = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu
    decisions = counts["admitted"] + counts["refused"]
    figures = {**counts, **latency_figures(latencies, decisions, seconds), "cpu_seconds": round(cpu, 2),
               "decisions_per_cpu_s": round(decisions / cpu, 1) if cpu else None}
    if port:  # the server's share of a decision, which this process's CPU leaves out
        server = postgres_cpu_seconds(port) - server
        figures.update(postgres_cpu_seconds=round(server, 2),
                       decisions_per_cpu_s_with_postgres=round(decisions / (cpu + server), 1))
    return figures


def postgres_cpu_seconds(port: int) -> float:
    """User + system CPU seconds of the Postgres server on ``port`` (postmaster, its backends, and the
    backends that already exited), from /proc; 0 where /proc cannot tell."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    postmaster = None
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            stats[int(proc.name)] = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if command[0].endswith(b"/postgres") and str(port).encode() in command:
            postmaster = int(proc.name)
    if postmaster is None:
        return 0.0
    ticks = sum(int(stat[11]) + int(stat[12]) for pid, stat in stats.items() if int(stat[1]) == postmaster)
    own = stats[postmaster]
    return (ticks + sum(int(field) for field in own[11:15])) / tick


def seed_history(url: str, *, leases: int, ledger: int, days: float = 60.0) -> None:
    """Fill a new SQLite database at schema 0001 with ``leases`` ended leases and ``ledger`` ledger
    entries of the benchmark users over ``days``, then migrate it (0002 fills the hourly usage)."""
    engine = make_engine(url)
    upgrade_database(engine, "0001")
    rng = random.Random(19)
    now = utcnow()
    stamp = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DateTime storage format

    def at(i: int, n: int) -> datetime:
        return now - timedelta(days=days) + timedelta(days=days) * (i / n) - timedelta(seconds=60)

    lease_rows = []
    for i in range(leases):
        ended = at(i, leases)
        seconds = rng.uniform(10, 3600)
        lease_rows.append({"id": f"lease-hist-{i}", "user": BENCH_USERS[i % USERS], "groups": "[]",
                           "request_id": f"hist-{i}", "label": "", "pool": "default", "gpus": 1, "concurrency": 1,
                           "gpus_total": 1, "estimated_seconds": 60.0, "ttl_seconds": 120.0, "status": "released",
                           "created_at": (ended - timedelta(seconds=seconds)).strftime(stamp),
                           "expires_at": ended.strftime(stamp), "ended_at": ended.strftime(stamp),
                           "gpu_seconds": seconds})
    events = ("admitted", "released", *("refused",) * 8)
    ledger_rows = [{"at": at(i, ledger).strftime(stamp), "event": events[i % len(events)],
                    "actor": BENCH_USERS[i % USERS], "user": BENCH_USERS[i % USERS],
                    "lease_id": f"lease-hist-{i % max(1, leases)}", "request_id": f"hist-{i}", "label": "",
                    "pool": "default", "gpus_total": 1, "gpu_seconds": None, "detail": None} for i in range(ledger)]
    with engine.begin() as conn:
        # plain executemany with the store's own statements: building a million ORM rows would take
        # longer than the benchmark
        conn.exec_driver_sql(sqlite_statement("insert_lease"), lease_rows)
        conn.exec_driver_sql(sqlite_statement("insert_ledger"), ledger_rows)
    upgrade_database(engine)
    engine.dispose()

