"""The quota store: atomic admission, heartbeats, release, expiry reclaim, policies and the ledger.

Atomicity (no over-admission, ever) comes from serialising every write that reads usage:

* In one process, ``_write_lock`` makes writers take turns, so threads queue on a cheap mutex
  instead of spinning in SQLite's busy handler. The threads that queue while a transaction runs
  share the next one (:mod:`hub_extension.group_commit`); inside it their operations run one after
  the other on one connection, each seeing the writes of those before it, and nobody gets a result
  before the commit. On Postgres each user's writes always go to the same one of a few such group
  commits (lanes), which run side by side; the row locks below keep them apart.
* Across processes, each write transaction is ``BEGIN IMMEDIATE`` on SQLite (see
  :func:`hub_extension.db.make_engine`): the database write lock is held from before usage is read
  until the lease is committed. On Postgres every write operation first locks the caller's row in
  ``quota_user_locks`` (an upsert, which holds the row lock to the commit like ``SELECT ... FOR
  UPDATE``); limits are per user, so admissions of different users still run in parallel, and a
  shared transaction takes all its users' locks first, in name order, as the periodic reclaim does,
  so two replicas cannot deadlock. Its admissions are then decided inside Postgres, in order, each
  after the leases of those before it, in the same call that reads the lease of each of its
  heartbeats and releases (:mod:`hub_extension.pg_admission`).

Every read on the admission path is bounded: a user's active leases (index ``user, status``), the
replayed request (unique ``user, request_id``), and the GPU-hour window, summed from
``quota_usage_hours`` (one row per user and clock hour, written when a lease ends) plus the leases
that ended in the window's first, partial hour (index ``user, ended_at``). None grows with history.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .driver_sql import ACTIVE, EXPIRED, RELEASED, DriverSQL, WriteConnection
from .errors import LeaseGone
from .group_commit import GroupCommit, SharedLock
from .group_ops import AdmitOp, LeaseOp, decide_in_postgres
from .pg_admission import use_server_functions
from .policy import Refusal, Usage, check_request
from .store_values import (
    Admission,
    AdmissionRequest,
    Caller,
    check_same_request,
    first_value,
    hour_start,
    lease_to_dict,
    ledger_entry,
    owned,
    remaining,
    request_of,
    resolve_policy_rows,
    utcnow,
    window_edges,
)
from .store_values import policy_values as policy_values  # re-exported: admin.py's import

log = logging.getLogger(__name__)

#: group commits side by side on Postgres (each its own connection and thread)
#: Two, measured (benchmarks.quota_admission, 2 cores, store alone): 1 lane 4138 decisions/s, 2 lanes 3921, 4 lanes 2870;
#: two replicas 1515/s with 2 against 1033 with 4. Fewer lanes make bigger batches (fewer round trips, less Python
#: per decision); a second keeps one batch deciding while another waits on a replica's row locks.
POSTGRES_LANES = 2

class QuotaStore:
    """All reads and writes of quota state. Thread-safe; one instance per service process."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_ttl_seconds: float = 120.0,
        max_ttl_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.default_ttl_seconds = default_ttl_seconds
        self.max_ttl_seconds = max_ttl_seconds
        self.clock = clock
        self._write_lock = SharedLock()  # lane 0, the maintenance group commit and admin writes
        self._readonly = engine.execution_options(nbscale_readonly=True)
        self._postgres = engine.dialect.name == "postgresql"
        # Postgres locks per user, so lanes of disjoint users run their batches side by side (one
        # waits for the server while another decides); SQLite's write lock is the whole database
        lanes = POSTGRES_LANES if self._postgres else 1
        # inside the server only with the functions this code expects (else the Python path, logged)
        server = self._postgres and self._has_server_functions()
        prepare = partial(decide_in_postgres, self) if server else None
        self._lanes = [GroupCommit(WriteConnection(engine, step=server).transaction, prepare=prepare,
                                   lock=self._write_lock if i == 0 else threading.Lock()) for i in range(lanes)]
        self._writes = self._lanes[0]
        self._lane_of: dict[str, int] = {}
        # the periodic reclaim, off the event loop: its own thread and connection, behind the same
        # mutex as the first lane (on SQLite, the database's only writer in this process)
        self._maintenance: GroupCommit[DriverSQL] = GroupCommit(WriteConnection(engine, step=server).transaction,
                                                                lock=self._write_lock)

    def _has_server_functions(self) -> bool:
        with self.engine.connect() as conn:
            return use_server_functions(conn)

    def _lane(self, user: str) -> GroupCommit[DriverSQL]:
        """The group commit that runs ``user``'s writes (the same one every time, in this process)."""
        lane = self._lane_of.get(user)
        if lane is None:  # users take the lanes in turn as they first come: balanced, whatever their names
            lane = self._lane_of.setdefault(user, len(self._lane_of) % len(self._lanes))
        return self._lanes[lane]

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_lock, Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._readonly, expire_on_commit=False) as session, session.begin():
            yield session

    # admission -------------------------------------------------------------------------------

    def admit(self, caller: Caller, req: AdmissionRequest) -> Admission:
        """Admit ``req`` for ``caller`` atomically, or refuse it with the reason (both go to the ledger)."""
        return self._lane(caller.name).run(AdmitOp(self, caller, req), order=caller.name)

    def submit_admit(self, caller: Caller, req: AdmissionRequest) -> Future[Admission]:
        """:meth:`admit` for an event loop: queued at once, decided in the group commit's thread."""
        return self._lane(caller.name).submit(AdmitOp(self, caller, req), order=caller.name)

    def _admit_decided(self, op: AdmitOp, sql: DriverSQL) -> Admission:
        """The Python half of an admission Postgres decided: the answer, and a refusal's ledger entry."""
        caller, req, decided, now = op.caller, op.req, op.decided or {}, op.now
        if decided["outcome"] == "known":
            check_same_request(decided["lease"], req)
            return Admission(lease=lease_to_dict(decided["lease"]), replayed=True)
        if decided["outcome"] == "admitted":  # its lease and ledger entry were written by Postgres
            return Admission(lease=lease_to_dict(op.lease))
        limits = resolve_policy_rows(caller.name, caller.groups, decided["policies"])
        refusal = check_request(limits, Usage(**decided["usage"]), request_of(req))
        if refusal is None:  # the two checks disagree: a bug, never an admission nobody checked
            raise RuntimeError(f"Postgres refused request {req.request_id} of {caller.name} but the policy check "
                               f"admits it (limits {limits}, usage {decided['usage']})")
        return self._refused(sql, now, caller, req, refusal)

    def _admit(self, caller: Caller, req: AdmissionRequest, sql: DriverSQL) -> Admission:
        now = self.clock()
        self._lock_user(sql, caller.name)
        leases, policies = sql.query_all(("active_or_known", {"user": caller.name, "request_id": req.request_id}),
                                         self._policies_read(sql, caller.name, caller.groups))
        known = next((row for row in leases if row["request_id"] == req.request_id), None)
        if known is not None:
            check_same_request(known, req)
            return Admission(lease=lease_to_dict(known), replayed=True)
        limits = resolve_policy_rows(caller.name, caller.groups, policies)
        # the window's width comes from the policies just read (then its sum, after any reclaim)
        usage = self._usage(sql, caller.name, now, limits.window_hours, active=leases, reclaim=True)
        refusal = check_request(limits, usage, request_of(req))
        if refusal is not None:
            return self._refused(sql, now, caller, req, refusal)
        lease = self._new_lease(caller, req, now)
        sql.write("insert_lease", {**lease, "groups": sql.json(lease["groups"])})
        return self._admitted(sql, now, caller, req, lease)

    def _new_lease(self, caller: Caller, req: AdmissionRequest, now: datetime) -> dict[str, Any]:
        ttl = min(req.ttl_seconds or self.default_ttl_seconds, self.max_ttl_seconds)
        return {
            "id": "lease-" + secrets.token_hex(8), "user": caller.name, "groups": sorted(caller.groups),
            "request_id": req.request_id, "label": req.label, "pool": req.pool, "gpus": req.gpus,
            "concurrency": req.concurrency, "gpus_total": req.gpus * req.concurrency,
            "estimated_seconds": req.estimated_seconds, "ttl_seconds": ttl, "status": ACTIVE,
            "created_at": now, "expires_at": now + timedelta(seconds=ttl), "ended_at": None, "gpu_seconds": None,
        }

    def _refused(self, sql: DriverSQL, now: datetime, caller: Caller, req: AdmissionRequest,
                 refusal: Refusal) -> Admission:
        sql.write("insert_ledger", ledger_entry(sql.json, now, "refused", caller.name, caller.name, req, detail={
            "limit": refusal.limit, "limit_value": refusal.limit_value, "message": refusal.message,
        }, gpus_total=req.gpus * req.concurrency))
        return Admission(refusal=refusal)

    def _admitted(self, sql: DriverSQL, now: datetime, caller: Caller, req: AdmissionRequest,
                  lease: dict[str, Any]) -> Admission:
        sql.write("insert_ledger", ledger_entry(sql.json, now, "admitted", caller.name, caller.name, req,
                                               gpus_total=lease["gpus_total"], lease_id=lease["id"]))
        return Admission(lease=lease_to_dict(lease))

    def _lock_user(self, sql: DriverSQL, user: str) -> None:
        if not self._postgres:
            return  # BEGIN IMMEDIATE already holds the database write lock
        sql.write("lock_user", {"user": user})  # the reads sent after it run once it holds the lock

    # leases ----------------------------------------------------------------------------------

    def heartbeat(self, caller: Caller, lease_id: str) -> dict[str, Any]:
        """Extend the caller's active lease by its TTL; an expired or released lease is gone (410)."""
        return self._lane(caller.name).run(LeaseOp(self, caller, lease_id), order=caller.name)

    def submit_heartbeat(self, caller: Caller, lease_id: str) -> Future[dict[str, Any]]:
        """:meth:`heartbeat` for an event loop (see :meth:`submit_admit`)."""
        return self._lane(caller.name).submit(LeaseOp(self, caller, lease_id), order=caller.name)

    @staticmethod
    def _heartbeat(sql: DriverSQL, now: datetime, lease: dict[str, Any]) -> dict[str, Any]:
        lease_id = lease["id"]
        if lease["status"] != ACTIVE:
            raise LeaseGone(
                f"Lease {lease_id} is {lease['status']}; its GPUs are no longer reserved. "
                "Submit the run again to get a new lease."
            )
        expires = now + timedelta(seconds=lease["ttl_seconds"])
        sql.write("extend_lease", {"lease_id": lease_id, "expires_at": expires})
        return lease_to_dict({**lease, "expires_at": expires})

    def release(self, caller: Caller, lease_id: str, gpu_seconds: float | None = None) -> dict[str, Any]:
        """End the caller's lease, recording GPU-seconds used (capped at what the lease could use).

        Releasing twice answers the same lease again (idempotent); releasing an expired lease keeps
        the expiry record.
        """
        return self._lane(caller.name).run(LeaseOp(self, caller, lease_id, release=True, gpu_seconds=gpu_seconds),
                                           order=caller.name)

    def submit_release(self, caller: Caller, lease_id: str, gpu_seconds: float | None = None) -> Future[dict[str, Any]]:
        """:meth:`release` for an event loop (see :meth:`submit_admit`)."""
        return self._lane(caller.name).submit(
            LeaseOp(self, caller, lease_id, release=True, gpu_seconds=gpu_seconds), order=caller.name)

    def _release(self, sql: DriverSQL, now: datetime, caller: Caller, lease: dict[str, Any],
                 gpu_seconds: float | None) -> dict[str, Any]:
        if lease["status"] != ACTIVE:
            return lease_to_dict(lease)
        most = lease["gpus_total"] * max(0.0, (now - lease["created_at"]).total_seconds())
        used = most if gpu_seconds is None else min(float(gpu_seconds), most)
        ended = {"status": RELEASED, "ended_at": now, "gpu_seconds": used}
        self._end_lease(sql, lease, ended, now, "released", caller.name, {"reported_gpu_seconds": gpu_seconds})
        return lease_to_dict({**lease, **ended})

    def _end_lease(self, sql: DriverSQL, lease: Mapping[str, Any], ended: dict[str, Any], now: datetime,
                   event: str, actor: str, detail: dict[str, Any] | None = None) -> None:
        """Mark ``lease`` ended, add its GPU-seconds to its hour, and write the ledger entry."""
        sql.write("end_lease", {"lease_id": lease["id"], **ended})
        sql.write("add_to_hour", {
            "user": lease["user"], "hour": hour_start(ended["ended_at"]), "gpu_seconds": ended["gpu_seconds"]})
        sql.write("insert_ledger", ledger_entry(
            sql.json, now, event, actor, lease["user"], lease_id=lease["id"], request_id=lease["request_id"],
            label=lease["label"], pool=lease["pool"], gpus_total=lease["gpus_total"],
            gpu_seconds=ended["gpu_seconds"], detail=detail))

    def _own_lease(self, sql: DriverSQL, caller: Caller, lease_id: str, now: datetime) -> dict[str, Any]:
        """The caller's lease ``lease_id`` under the caller's lock, after reclaiming their overdue leases."""
        self._lock_user(sql, caller.name)
        overdue, found = sql.query_all(("overdue_of_user", {"now": now, "user": caller.name}),
                                       ("lease_by_id", {"lease_id": lease_id}))
        self._reclaim(sql, now, caller.name, overdue=overdue)
        lease = owned(found[0] if found else None, caller, lease_id)
        if any(row["id"] == lease_id for row in overdue):  # reclaimed just now: read it as it is now
            lease = sql.query("lease_by_id", {"lease_id": lease_id})[0]
        return lease

    def reclaim_expired(self) -> int:
        """Expire every lease whose holder stopped heartbeating; returns how many were reclaimed."""
        return self._maintenance.run(self._reclaim_expired)

    def reclaim_in_background(self) -> None:
        """:meth:`reclaim_expired` for an event loop's timer: queued, not awaited; a failure is logged."""
        self._maintenance.submit(self._reclaim_expired).add_done_callback(_log_reclaim_failure)

    def _reclaim_expired(self, sql: DriverSQL) -> int:
        now = self.clock()
        users = sorted(row["user"] for row in sql.query("overdue_users", {"now": now}))
        for user in users:  # in user order, each under its lock: the order every batch takes them in
            self._lock_user(sql, user)
        return sum(self._reclaim(sql, now, user=user) for user in users)

    def _reclaim(self, sql: DriverSQL, now: datetime, user: str,
                 overdue: Sequence[Mapping[str, Any]] | None = None) -> int:
        if overdue is None:
            overdue = sql.query("overdue_of_user", {"now": now, "user": user})
        for lease in overdue:
            held = max(0.0, (lease["expires_at"] - lease["created_at"]).total_seconds())
            ended = {"status": EXPIRED, "ended_at": lease["expires_at"], "gpu_seconds": held * lease["gpus_total"]}
            self._end_lease(sql, lease, ended, now, "expired", "nbscale-quotas")
        if overdue:
            log.info("reclaimed %s expired lease(s)", len(overdue))
        return len(overdue)

    # usage and limits ------------------------------------------------------------------------

    @staticmethod
    def _policies_read(sql: DriverSQL, user: str, groups: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        return "policies_for", {"user": user, "groups": sql.name_list(groups)}

    def _usage(self, sql: DriverSQL, user: str, now: datetime, window_hours: float, *,
               active: Sequence[Mapping[str, Any]] | None = None, reclaim: bool) -> Usage:
        """What ``user`` holds and used in the window; overdue leases are reclaimed, or left out on reads.

        Bounded by the user's active leases and the window's hours, never by history (``UsageHour``).
        """
        if active is None:
            active = sql.query("active_of_user", {"user": user})
        active = [row for row in active if row["status"] == ACTIVE]
        overdue = [row for row in active if row["expires_at"] < now]
        if reclaim and overdue:
            self._reclaim(sql, now, user, overdue=overdue)  # before the read: the reclaimed leases now count as ended
        since, first_whole = window_edges(now, window_hours)  # whole hours from UsageHour, the first from leases
        ended = first_value(sql.query("ended_since", {"user": user, "since": since, "first_whole_hour": first_whole}))
        live = [row for row in active if row["expires_at"] >= now]
        running = sum(row["gpus_total"] * max(0.0, (now - row["created_at"]).total_seconds()) for row in live)
        # a read counts an overdue lease's GPU-time until its expiry, as its reclaim will charge it
        pending = 0.0 if reclaim else sum(
            row["gpus_total"] * max(0.0, (row["expires_at"] - row["created_at"]).total_seconds()) for row in overdue)
        return Usage(
            gpus_in_use=sum(row["gpus_total"] for row in live),
            runs_active=len(live),
            gpu_seconds_in_window=ended + running + pending,
        )


    def quota_for(self, user: str, groups: tuple[str, ...]) -> dict[str, Any]:
        """Limits, usage and what is left for ``user`` (expired leases count as released)."""
        with self._readonly.connect() as conn, conn.begin():
            sql = DriverSQL(conn)
            now = self.clock()
            limits = resolve_policy_rows(user, groups, sql.query(*self._policies_read(sql, user, groups)))
            usage = self._usage(sql, user, now, limits.window_hours, reclaim=False)
            leases = sql.query("live_of_user", {"user": user, "now": now})
            return {
                "enabled": True,
                "user": user,
                "groups": list(groups),
                "limits": limits.to_dict(),
                "usage": {
                    "gpus_in_use": usage.gpus_in_use,
                    "runs_active": usage.runs_active,
                    "gpu_hours_in_window": round(usage.gpu_hours_in_window, 4),
                },
                "remaining": remaining(limits, usage),
                "leases": [lease_to_dict(lease) for lease in leases],
            }


def _log_reclaim_failure(done: Future[int]) -> None:
    if done.exception() is not None:
        log.error("reclaiming expired leases failed (tried again at the next interval): %s", done.exception())
