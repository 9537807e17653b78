"""The quota store: atomic admission, heartbeats, release, expiry reclaim, policies and the ledger.

Atomicity (no over-admission, ever) comes from serialising every write that reads usage:

* In one process, ``_write_lock`` makes writers take turns, so threads queue on a cheap mutex
  instead of spinning in SQLite's busy handler.
* Across processes, each write transaction is ``BEGIN IMMEDIATE`` on SQLite (see
  :func:`hub_extension.db.make_engine`): the database write lock is held from before usage is read
  until the lease is committed. On Postgres the transaction first locks the caller's row in
  ``quota_user_locks`` with ``SELECT ... FOR UPDATE``; limits are per user, so admissions of
  different users still run in parallel.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .errors import LeaseGone, LeaseNotFound, RequestIdConflict
from .models import Lease, LedgerEntry, Policy, UserLock
from .policy import (
    Limits,
    PolicyValues,
    Refusal,
    Request,
    Usage,
    check_request,
    resolve_limits,
)

log = logging.getLogger(__name__)

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"


def utcnow() -> datetime:
    """Naive UTC now (every timestamp in the quota database is naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who is calling, as the hub's token check said: never taken from a request body."""

    name: str
    kind: str = "user"
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AdmissionRequest:
    """One admission request (already validated at the REST boundary)."""

    gpus: int
    pool: str
    concurrency: int
    estimated_seconds: float
    request_id: str
    label: str = ""
    ttl_seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class Admission:
    """Outcome of :meth:`QuotaStore.admit`: a lease, or a refusal; ``replayed`` for a known request id."""

    lease: dict[str, Any] | None = None
    refusal: Refusal | None = None
    replayed: bool = False


def lease_to_dict(lease: Lease) -> dict[str, Any]:
    """JSON form of a lease."""
    return {
        "id": lease.id,
        "user": lease.user,
        "request_id": lease.request_id,
        "label": lease.label,
        "pool": lease.pool,
        "gpus": lease.gpus,
        "concurrency": lease.concurrency,
        "gpus_total": lease.gpus_total,
        "estimated_seconds": lease.estimated_seconds,
        "ttl_seconds": lease.ttl_seconds,
        "status": lease.status,
        "created_at": lease.created_at.isoformat() + "Z",
        "expires_at": lease.expires_at.isoformat() + "Z",
        "ended_at": lease.ended_at.isoformat() + "Z" if lease.ended_at else None,
        "gpu_seconds": lease.gpu_seconds,
    }


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
        self._write_lock = threading.Lock()
        self._readonly = engine.execution_options(nbscale_readonly=True)

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
        with self._write() as s:
            now = self.clock()
            self._lock_user(s, caller.name)
            known = s.scalar(select(Lease).where(Lease.user == caller.name, Lease.request_id == req.request_id))
            if known is not None:
                self._check_same_request(known, req)
                return Admission(lease=lease_to_dict(known), replayed=True)
            self._reclaim(s, now, user=caller.name)
            limits = self._limits(s, caller.name, caller.groups)
            request = Request(
                gpus=req.gpus, pool=req.pool, concurrency=req.concurrency, estimated_seconds=req.estimated_seconds
            )
            refusal = check_request(limits, self._usage(s, caller.name, now, limits.window_hours), request)
            if refusal is not None:
                s.add(self._entry(now, "refused", caller.name, caller.name, req, detail={
                    "limit": refusal.limit, "limit_value": refusal.limit_value, "message": refusal.message,
                }, gpus_total=request.gpus_total))
                return Admission(refusal=refusal)
            ttl = min(req.ttl_seconds or self.default_ttl_seconds, self.max_ttl_seconds)
            lease = Lease(
                id="lease-" + secrets.token_hex(8), user=caller.name, groups=sorted(caller.groups),
                request_id=req.request_id, label=req.label, pool=req.pool, gpus=req.gpus,
                concurrency=req.concurrency, gpus_total=request.gpus_total,
                estimated_seconds=req.estimated_seconds, ttl_seconds=ttl, status=ACTIVE,
                created_at=now, expires_at=now + timedelta(seconds=ttl),
            )
            s.add(lease)
            entry = self._entry(now, "admitted", caller.name, caller.name, req, gpus_total=request.gpus_total)
            entry.lease_id = lease.id
            s.add(entry)
            return Admission(lease=lease_to_dict(lease))

    def _lock_user(self, s: Session, user: str) -> None:
        dialect = s.get_bind().dialect.name
        if dialect == "sqlite":
            return  # BEGIN IMMEDIATE already holds the database write lock
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        s.execute(insert(UserLock).values(user=user).on_conflict_do_nothing())
        s.execute(select(UserLock).where(UserLock.user == user).with_for_update())

    @staticmethod
    def _check_same_request(known: Lease, req: AdmissionRequest) -> None:
        same = (known.gpus, known.pool, known.concurrency) == (req.gpus, req.pool, req.concurrency)
        if not same:
            raise RequestIdConflict(
                f"Request id '{req.request_id}' was already used for a different request "
                f"({known.gpus} GPU(s) × {known.concurrency} on pool '{known.pool}'). "
                "Use a new request id for a new submission."
            )

    @staticmethod
    def _entry(now: datetime, event: str, actor: str, user: str, req: AdmissionRequest | None = None,
               **fields: Any) -> LedgerEntry:
        if req is not None:
            fields.update(request_id=req.request_id, label=req.label, pool=req.pool)
        return LedgerEntry(at=now, event=event, actor=actor, user=user, **fields)

    # leases ----------------------------------------------------------------------------------

    def heartbeat(self, caller: Caller, lease_id: str) -> dict[str, Any]:
        """Extend the caller's active lease by its TTL; an expired or released lease is gone (410)."""
        with self._write() as s:
            now = self.clock()
            lease = self._own_lease(s, caller, lease_id)
            self._reclaim(s, now, user=lease.user)
            if lease.status != ACTIVE:
                raise LeaseGone(
                    f"Lease {lease_id} is {lease.status}; its GPUs are no longer reserved. "
                    "Submit the run again to get a new lease."
                )
            lease.expires_at = now + timedelta(seconds=lease.ttl_seconds)
            return lease_to_dict(lease)

    def release(self, caller: Caller, lease_id: str, gpu_seconds: float | None = None) -> dict[str, Any]:
        """End the caller's lease, recording GPU-seconds used (capped at what the lease could use).

        Releasing twice answers the same lease again (idempotent); releasing an expired lease keeps
        the expiry record.
        """
        with self._write() as s:
            now = self.clock()
            lease = self._own_lease(s, caller, lease_id)
            self._reclaim(s, now, user=lease.user)
            if lease.status != ACTIVE:
                return lease_to_dict(lease)
            most = lease.gpus_total * max(0.0, (now - lease.created_at).total_seconds())
            used = most if gpu_seconds is None else min(float(gpu_seconds), most)
            lease.status, lease.ended_at, lease.gpu_seconds = RELEASED, now, used
            s.add(LedgerEntry(
                at=now, event="released", actor=caller.name, user=lease.user, lease_id=lease.id,
                request_id=lease.request_id, label=lease.label, pool=lease.pool,
                gpus_total=lease.gpus_total, gpu_seconds=used,
                detail={"reported_gpu_seconds": gpu_seconds},
            ))
            return lease_to_dict(lease)

    @staticmethod
    def _own_lease(s: Session, caller: Caller, lease_id: str) -> Lease:
        lease = s.get(Lease, lease_id)
        if lease is None or lease.user != caller.name:
            raise LeaseNotFound(f"You have no lease '{lease_id}'.")
        return lease

    def reclaim_expired(self) -> int:
        """Expire every lease whose holder stopped heartbeating; returns how many were reclaimed."""
        with self._write() as s:
            return self._reclaim(s, self.clock())

    def _reclaim(self, s: Session, now: datetime, user: str | None = None) -> int:
        overdue = select(Lease.id).where(Lease.status == ACTIVE, Lease.expires_at < now)
        if user is not None:
            overdue = overdue.where(Lease.user == user)
        # the common case (nothing overdue) stays one cheap Core query, without loading entities
        ids = list(s.connection().execute(overdue).scalars())
        if not ids:
            return 0
        for lease in s.scalars(select(Lease).where(Lease.id.in_(ids))):
            held = max(0.0, (lease.expires_at - lease.created_at).total_seconds())
            lease.status, lease.ended_at, lease.gpu_seconds = EXPIRED, lease.expires_at, held * lease.gpus_total
            s.add(LedgerEntry(
                at=now, event="expired", actor="nbscale-quotas", user=lease.user, lease_id=lease.id,
                request_id=lease.request_id, label=lease.label, pool=lease.pool,
                gpus_total=lease.gpus_total, gpu_seconds=lease.gpu_seconds,
            ))
        log.info("reclaimed %s expired lease(s)", len(ids))
        return len(ids)

    # usage and limits ------------------------------------------------------------------------

    def _limits(self, s: Session, user: str, groups: tuple[str, ...]) -> Limits:
        columns = [getattr(Policy, name) for name in ("kind", "name", *POLICY_COLUMNS)]
        rows = s.connection().execute(select(*columns).where(
            ((Policy.kind == "user") & (Policy.name == user))
            | ((Policy.kind == "group") & Policy.name.in_(groups))
            | (Policy.kind == "default")
        ))
        return resolve_limits(user, groups, [_row_values(row) for row in rows])

    def _usage(self, s: Session, user: str, now: datetime, window_hours: float) -> Usage:
        conn = s.connection()
        active = conn.execute(select(Lease.gpus_total, Lease.created_at).where(
            Lease.user == user, Lease.status == ACTIVE)).all()
        since = now - timedelta(hours=window_hours)
        ended = conn.execute(select(func.coalesce(func.sum(Lease.gpu_seconds), 0.0)).where(
            Lease.user == user, Lease.status != ACTIVE, Lease.ended_at >= since)).scalar()
        running = sum(gpus * max(0.0, (now - created).total_seconds()) for gpus, created in active)
        return Usage(
            gpus_in_use=sum(gpus for gpus, _ in active),
            runs_active=len(active),
            gpu_seconds_in_window=float(ended or 0.0) + running,
        )

    def quota_for(self, user: str, groups: tuple[str, ...]) -> dict[str, Any]:
        """Limits, usage and what is left for ``user`` (expired leases count as released)."""
        with self._read() as s:
            now = self.clock()
            limits = self._limits(s, user, groups)
            usage = self._usage_excluding_expired(s, user, now, limits.window_hours)
            leases = s.scalars(select(Lease).where(
                Lease.user == user, Lease.status == ACTIVE, Lease.expires_at >= now).order_by(Lease.created_at))
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
                "remaining": _remaining(limits, usage),
                "leases": [lease_to_dict(lease) for lease in leases],
            }

    def _usage_excluding_expired(self, s: Session, user: str, now: datetime, window_hours: float) -> Usage:
        # read path: do not write the reclaim, just leave overdue leases out of "in use"
        usage = self._usage(s, user, now, window_hours)
        overdue = list(s.scalars(select(Lease).where(
            Lease.user == user, Lease.status == ACTIVE, Lease.expires_at < now)))
        return Usage(
            gpus_in_use=usage.gpus_in_use - sum(lease.gpus_total for lease in overdue),
            runs_active=usage.runs_active - len(overdue),
            gpu_seconds_in_window=usage.gpu_seconds_in_window,
        )


POLICY_COLUMNS = ("max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours", "allowed_pools")


def _row_values(row: Any) -> PolicyValues:
    values = dict(row._mapping)
    pools = values.pop("allowed_pools")
    return PolicyValues(**values, allowed_pools=tuple(pools) if pools is not None else None)


def policy_values(p: Policy) -> PolicyValues:
    """Pure view of a policy row."""
    return PolicyValues(
        kind=p.kind, name=p.name, max_gpus=p.max_gpus, max_runs=p.max_runs,
        max_gpus_per_run=p.max_gpus_per_run, gpu_hours_budget=p.gpu_hours_budget,
        window_hours=p.window_hours,
        allowed_pools=tuple(p.allowed_pools) if p.allowed_pools is not None else None,
    )


def _remaining(limits: Limits, usage: Usage) -> dict[str, Any]:
    def left(limit: float | None, used: float) -> float | None:
        return None if limit is None else max(0, limit - used)

    return {
        "gpus": left(limits.max_gpus, usage.gpus_in_use),
        "runs": left(limits.max_runs, usage.runs_active),
        "gpu_hours": None if limits.gpu_hours_budget is None
        else round(max(0.0, limits.gpu_hours_budget - usage.gpu_hours_in_window), 4),
    }
