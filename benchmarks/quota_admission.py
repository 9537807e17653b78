"""Admission throughput of the GPU quota service: 50 concurrent clients, through a real hub and proxy.

Measures, in one run, on a shared machine:

* the store alone, in-process, on SQLite (empty, and holding 1 million ledger entries and 100,000
  ended leases) and on a throwaway Postgres (:mod:`benchmarks.quota_store`);
* HTTP through the hub's proxy and direct to the service (SQLite), each next to the load
  generator's ceiling: the same clients against a no-op endpoint of the same service
  (``api/v1/benchmark/noop``, served only with ``$NBSCALE_QUOTA_BENCHMARK_ENDPOINTS=1``). It does
  what an admission request does up to the decision: the hub token check (HubOAuth and its cache),
  the use scope, the body parsed and validated as an admission body, a JSON answer with status 409
  (logged as a refusal is); it skips only the decision itself (the hand-off to the group commit's
  thread and the database);
* two service replicas on one Postgres, 50 clients spread over both, in 20 rounds of 50 requests
  fired at once at one user's limit (exactly the limit must be admitted every round).

The load generator is 50 closed-loop clients: coroutines on keep-alive HTTP/1.1 connections (h11)
in 2 processes (:mod:`benchmarks.quota_clients`), each asking, waiting for its answer, and releasing
what it was given before asking again; it reports its own CPU per request. ``--client-nice N``
also measures each path with the clients at nice level N, as clients on other machines would
not compete with the service for its cores: a harness choice, reported beside the plain figure
(under its own key), never instead of it.

Each HTTP measurement also reports the service process's CPU per request (``/proc``), which the
shared machine distorts less than the rates, split into the event loop's thread and the others
(the database's), and what the service measured itself (``inside_the_service``, from
``api/v1/benchmark/timings``): each request's time from its parsed headers to its answer, the event
loop's busy stretches between two polls, and the garbage collector's pauses. With ``--baseline DIR`` (a source tree such as ``git archive`` of main, with its
``node_modules``) the HTTP part also runs from DIR, before each of ``--rounds`` rounds of this tree.

5 users with a limit of 4 GPUs; a client asks for 1 GPU, holds it briefly when admitted and releases
it. Over-admissions are counted by replaying the service's ledger in commit order (must be 0).

    python -m benchmarks.quota_admission [--seconds 10] [--clients 50] [--parts store,http,replicas]
        [--baseline DIR] [--rounds N] [--client-nice N]

``--parts`` runs some of the measurements only (while working on one of them); the results file
then holds only those.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.quota_clients import latency_figures, run_clients
from benchmarks.quota_service_figures import service_pid, with_service_cpu, with_service_timings
from benchmarks.quota_store import BENCH_USERS, LIMIT, open_store, run_store_only, seed_history
from hub_extension import SERVICE_NAME
from hub_extension.devhub import QUOTA_ADMIN_USER, LocalHub, free_port, throwaway_postgres
from hub_extension.handlers.benchmark import BENCHMARK_ENV

RESULTS = Path(__file__).parent / "results" / "quota_admission.json"


def over_admissions(base_url: str, admin_token: str, users: list[str]) -> int:
    """Replay the ledger in commit order; count admissions that took a user above their limit."""
    http = httpx.Client(base_url=base_url + "api/v1/", timeout=60, headers={"Authorization": f"token {admin_token}"})
    entries: list[dict[str, Any]] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"before": before} if before else {})}
        page = http.get("ledger", params=params).json()["entries"]
        if not page:
            break
        entries.extend(page)
        before = page[-1]["id"]
    http.close()
    held = {user: 0 for user in users}
    over = 0
    for entry in sorted(entries, key=lambda e: e["id"]):
        if entry["user"] not in held:
            continue
        if entry["event"] == "admitted":
            held[entry["user"]] += entry["gpus_total"]
            over += held[entry["user"]] > LIMIT
        elif entry["event"] in ("released", "expired"):
            held[entry["user"]] -= entry["gpus_total"]
    return over


def measure_http(url: str, tokens: list[str], args: argparse.Namespace, pid: int | None = None,
                 nice: int = 0) -> dict[str, Any]:
    """The load generator's ceiling (no-op endpoint) and admission, back to back on the same server."""
    ceiling = with_service_timings(url, tokens[0], lambda: with_service_cpu(pid, lambda: run_clients(
        [url], tokens, args.clients, args.seconds, args.hold, path="benchmark/noop", nice=nice)))
    admission = with_service_timings(url, tokens[0], lambda: with_service_cpu(pid, lambda: run_clients(
        [url], tokens, args.clients, args.seconds, args.hold, nice=nice)))
    return {
        "ceiling_noop": ceiling,
        "admission": admission,
        # admission's requests (decisions and releases) against the most requests the clients can make
        "requests_share_of_ceiling": round(admission["requests_per_s"] / ceiling["requests_per_s"], 3),
        "decisions_share_of_ceiling": round(admission["decisions_per_s"] / ceiling["decisions_per_s"], 3),
    }


def _set_limits(hub: LocalHub, admin: str) -> list[str]:
    for user in BENCH_USERS:
        httpx.put(f"{hub.service_url}api/v1/policies/user/{user}", json={"max_gpus": LIMIT},
                  headers={"Authorization": f"token {admin}"}, timeout=60).raise_for_status()
    return [hub.token_for(user) for user in BENCH_USERS]


def bench_hub(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """HTTP through the proxy and direct to the service (SQLite), each next to its no-op ceiling."""
    extra = f"c.JupyterHub.services[0]['environment'] = {{{BENCHMARK_ENV!r}: '1'}}"
    with LocalHub(workdir / "hub-sqlite", extra_config=extra) as hub:
        admin = hub.token_for(QUOTA_ADMIN_USER, groups=[])
        tokens = _set_limits(hub, admin)
        runs: dict[str, Any] = {}
        for path, url in (("through the proxy", hub.service_url), ("direct to the service", hub.service_direct_url)):
            runs[path] = measure_http(url, tokens, args, service_pid(hub))
            print(f"{path}: {json.dumps(runs[path])}", flush=True)
            if args.client_nice:  # beside the plain figure, never instead of it
                niced = f"{path}, clients at nice {args.client_nice}"
                runs[niced] = measure_http(url, tokens, args, service_pid(hub), nice=args.client_nice)
                print(f"{niced}: {json.dumps(runs[niced])}", flush=True)
        runs["over_admissions"] = over_admissions(hub.service_url, admin, BENCH_USERS)
    return runs


def baseline_http(tree: Path, args: argparse.Namespace, output: Path) -> dict[str, Any]:
    """The HTTP part of this benchmark as the source tree ``tree`` (e.g. ``git archive`` of main) runs it."""
    command = [sys.executable, "-m", "benchmarks.quota_admission", "--parts", "http", "--seconds", str(args.seconds),
               "--clients", str(args.clients), "--hold", str(args.hold), "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    subprocess.run(command, cwd=tree, env=env, check=True)
    return dict(json.loads(output.read_text(encoding="utf-8"))["http"])


def bench_http_rounds(workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--rounds`` HTTP measurements of this tree, each after one of ``--baseline`` (if given), so both
    sides share the machine's load as it comes and goes."""
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        entry: dict[str, Any] = {}
        if args.baseline:
            entry["baseline"] = baseline_http(args.baseline, args, workdir / f"baseline-{i}.json")
        entry["this"] = bench_hub(workdir / f"round-{i}", args)
        for side, http in entry.items():
            print(f"round {i + 1}, {side}: " + "; ".join(
                f"{path}: {run['admission']['requests_per_s']}/s = {run['requests_share_of_ceiling']:.0%} of "
                f"{run['ceiling_noop']['requests_per_s']}/s, p99 {run['admission']['p99_ms']} ms, "
                f"{run['admission']['service_cpu_ms_per_request']} ms CPU/request "
                f"(no-op {run['ceiling_noop']['service_cpu_ms_per_request']})"
                for path, run in http.items() if path != "over_admissions"), flush=True)
        rounds.append(entry)
    return rounds


def start_replica(hub: LocalHub, api_token: str, db_url: str) -> tuple[subprocess.Popen[bytes], str]:
    """A second quota service process, beside the hub-managed one, with the service's identity."""
    port = free_port()
    prefix = f"/services/{SERVICE_NAME}/"
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                  os.environ.get("PYTHONPATH")])),
        "JUPYTERHUB_API_TOKEN": api_token, "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.hub_port}/hub/api",
        "JUPYTERHUB_SERVICE_NAME": SERVICE_NAME, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_PREFIX": prefix, "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"service-{SERVICE_NAME}", "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(["access:services", f"access:services!service={SERVICE_NAME}"]),
    }
    log = (hub.workdir / "replica-2.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "hub_extension", f"--db-url={db_url}"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}{prefix}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "api/v1/me", timeout=2).status_code == 403:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.25)
    process.terminate()
    raise RuntimeError(f"the second replica did not answer; see {hub.workdir / 'replica-2.log'}")


def burst_rounds(urls: list[str], token: str, rounds: int, clients: int) -> dict[str, Any]:
    """``rounds`` times: ``clients`` requests at once for one user, spread over ``urls``; then release."""
    https = [httpx.Client(base_url=urls[i % len(urls)] + "api/v1/", timeout=60,
                          headers={"Authorization": f"token {token}"}) for i in range(clients)]
    admitted_per_round, latencies, started = [], [], time.perf_counter()
    try:
        for _ in range(rounds):
            barrier, answers = threading.Barrier(clients), list[Any]([None] * clients)

            def ask(i: int, barrier: threading.Barrier = barrier, answers: list[Any] = answers) -> None:
                barrier.wait()
                t0 = time.perf_counter()
                answers[i] = https[i].post("leases", json={"gpus": 1, "estimated_seconds": 60,
                                                           "request_id": uuid.uuid4().hex})
                latencies.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            admitted = [a.json()["lease"]["id"] for a in answers if a is not None and a.status_code == 201]
            admitted_per_round.append(len(admitted))
            for i, lease_id in enumerate(admitted):
                https[i].post(f"leases/{lease_id}/release", json={}).raise_for_status()
    finally:
        for http in https:
            http.close()
    elapsed = time.perf_counter() - started
    return {"rounds": rounds, "admitted_per_round": admitted_per_round,
            **latency_figures(latencies, rounds * clients, elapsed)}


def bench_replicas(workdir: Path, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two replicas on one Postgres: sustained load over both, then 20 burst rounds; ledger replay."""
    api_token = secrets.token_hex(32)
    extra = f"c.JupyterHub.services[0]['api_token'] = {api_token!r}"
    with LocalHub(workdir / "hub-postgres", db_url=db_url, extra_config=extra) as hub:
        admin = hub.token_for(QUOTA_ADMIN_USER, groups=[])
        tokens = _set_limits(hub, admin)
        replica, second_url = start_replica(hub, api_token, db_url)
        try:
            urls = [hub.service_direct_url, second_url]
            sustained = run_clients(urls, tokens, args.clients, args.seconds, args.hold, processes=4)
            print(f"two replicas, sustained: {json.dumps(sustained)}", flush=True)
            bursts = burst_rounds(urls, tokens[0], 20, args.clients)
            print(f"two replicas, 20 burst rounds: {json.dumps(bursts)}", flush=True)
        finally:
            replica.terminate()
            replica.wait(timeout=30)
        over = over_admissions(hub.service_url, admin, BENCH_USERS)
    return {"sustained": sustained, "burst_rounds": bursts, "over_admissions": over}


def bench_store(workdir: Path, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The store alone: SQLite empty, SQLite with a long history, Postgres."""
    out: dict[str, Any] = {}
    history_url = f"sqlite:///{workdir / 'history.sqlite'}"
    started = time.perf_counter()
    seed_history(history_url, leases=args.history_leases, ledger=args.history_ledger)
    print(f"seeded {args.history_leases} ended leases and {args.history_ledger} ledger entries "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    for name, url, fresh in (("sqlite_empty", f"sqlite:///{workdir / 'empty.sqlite'}", True),
                             ("sqlite_with_history", history_url, False), ("postgres", db_url, True)):
        store = open_store(url, fresh=fresh)
        out[name] = run_store_only(store, args.clients, args.seconds, args.hold)
        store.engine.dispose()
        print(f"store alone, {name}: {json.dumps(out[name])}", flush=True)
    out["history_share_of_empty"] = round(out["sqlite_with_history"]["decisions_per_s"]
                                          / out["sqlite_empty"]["decisions_per_s"], 3)
    out["history"] = {"ended_leases": args.history_leases, "ledger_entries": args.history_ledger}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--hold", type=float, default=0.02, help="seconds an admitted client holds its GPU")
    parser.add_argument("--history-leases", type=int, default=100_000)
    parser.add_argument("--history-ledger", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=Path, help="also run the HTTP part from this source tree (its own "
                        "node_modules included), alternating with this one round by round")
    parser.add_argument("--rounds", type=int, default=1, help="HTTP measurements of each side")
    parser.add_argument("--client-nice", type=int, default=0, help="also measure each HTTP path with the load "
                        "generator at this nice level (a harness choice, reported beside the plain figure)")
    parser.add_argument("--parts", type=_parts, default=PARTS, help="comma-separated, of: " + ",".join(PARTS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbscale-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        needs_postgres = bool({"store", "replicas"} & set(args.parts))  # the HTTP part runs on SQLite
        pg_url = stack.enter_context(throwaway_postgres()) if needs_postgres else ""
        store: dict[str, Any] = bench_store(workdir, pg_url, args) if "store" in args.parts else {}
        rounds = bench_http_rounds(workdir, args) if "http" in args.parts else []
        http: dict[str, Any] = rounds[0]["this"] if rounds else {"over_admissions": 0}
        replicas: dict[str, Any] = (bench_replicas(workdir, pg_url, args) if "replicas" in args.parts
                    else {"over_admissions": 0, "burst_rounds": {"admitted_per_round": []}})
    over = sum(side["over_admissions"] for entry in rounds for side in entry.values()) + replicas["over_admissions"]
    report = {
        "benchmark": "quota_admission",
        "machine": {"cores": os.cpu_count(), "memory_gb": _memory_gb(), "python": platform.python_version(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    "note": "2 cores shared with other engineers' test runs while measured; the clients, the "
                            "proxy, the hub, the service and Postgres all run on the same 2 cores"},
        "parts": list(args.parts),
        "setup": {"clients": args.clients, "users": len(BENCH_USERS), "max_gpus_per_user": LIMIT,
                  "seconds_per_run": args.seconds, "hold_seconds": args.hold, "client_nice": args.client_nice,
                  "http_database": "SQLite (WAL, synchronous=NORMAL, BEGIN IMMEDIATE)"},
        "store_alone": store,
        "http": http,
        **({"http_rounds": rounds, "baseline": str(args.baseline)} if args.baseline or len(rounds) > 1 else {}),
        "two_replicas_on_postgres": replicas,
        "over_admissions": over,
        "over_admissions_counted_over": "every HTTP run, by replaying each service's ledger in commit order",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"over-admissions: {over}; written to {args.output}")
    if over or any(n != LIMIT for n in replicas["burst_rounds"]["admitted_per_round"]):
        raise SystemExit(f"{over} over-admission(s), rounds {replicas['burst_rounds']['admitted_per_round']}: "
                         "admission is not atomic")
    return report


PARTS = ("store", "http", "replicas")


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown or text!r}: choose from {', '.join(PARTS)}")
    return parts


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)


if __name__ == "__main__":
    main()
