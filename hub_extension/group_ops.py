"""A group commit's operations on the quota store, and the Postgres batch that decides them in one call.

Each admission, heartbeat and release is an operation object that a group commit
(:mod:`hub_extension.group_commit`) runs on its transaction's connection. On Postgres,
:func:`decide_in_postgres` first hands the whole batch to ``quota_decide_batch``
(:mod:`hub_extension.pg_admission`), which decides the admissions and reads each heartbeat's and
release's lease; each operation then finishes from what was decided (``decided``), or, when the
batch left it to Python (``slow``, or no server functions), on the statement-by-statement path of
:class:`hub_extension.store.QuotaStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from .driver_sql import DriverSQL
from .pg_admission import decide_batch
from .store_values import Admission, AdmissionRequest, Caller, owned


class QuotaStore(Protocol):
    """What these operations use of :class:`hub_extension.store.QuotaStore`, which builds them (an import of it,
    even for typing, would make the two modules import each other)."""

    def clock(self) -> datetime: ...
    def _new_lease(self, caller: Caller, req: AdmissionRequest, now: datetime) -> dict[str, Any]: ...
    def _admit(self, caller: Caller, req: AdmissionRequest, sql: DriverSQL) -> Admission: ...
    def _admit_decided(self, op: AdmitOp, sql: DriverSQL) -> Admission: ...
    def _own_lease(self, sql: DriverSQL, caller: Caller, lease_id: str, now: datetime) -> dict[str, Any]: ...
    def _release(self, sql: DriverSQL, now: datetime, caller: Caller, lease: dict[str, Any], gpu_seconds: float | None) -> dict[str, Any]: ...
    def _heartbeat(self, sql: DriverSQL, now: datetime, lease: dict[str, Any]) -> dict[str, Any]: ...


def decide_in_postgres(store: QuotaStore, sql: DriverSQL, batch: list[tuple[str, Callable[[DriverSQL], Any]]]) -> None:
    """Postgres: lock the batch's users, decide its admissions and read the lease of each heartbeat
    and release, in one call (:mod:`.pg_admission`)."""
    ops: list[AdmitOp | LeaseOp] = []
    requests: list[dict[str, Any]] = []
    now = store.clock()
    for _, op in batch:
        if isinstance(op, AdmitOp):
            op.lease = store._new_lease(op.caller, op.req, now)  # the request: the lease it would be
            requests.append({**op.lease, "now": now})
        elif isinstance(op, LeaseOp) and all(op.lease_id != seen.lease_id for seen in ops
                                             if isinstance(seen, LeaseOp)):
            # (a second operation on one lease reads it in Python, after the first one's writes)
            requests.append({"user": op.caller.name, "lease_id": op.lease_id, "now": now})
        else:
            continue
        op.now = now
        ops.append(op)
    if not ops:
        return
    for op, decided in zip(ops, decide_batch(sql, [user for user, _ in batch], requests), strict=True):
        op.decided = decided


class AdmitOp:
    """One admission in a group commit: decided in Postgres with its batch (``decided``), else in Python."""

    __slots__ = ("caller", "decided", "lease", "now", "req", "store")

    def __init__(self, store: QuotaStore, caller: Caller, req: AdmissionRequest) -> None:
        self.store, self.caller, self.req = store, caller, req
        self.decided: dict[str, Any] | None = None
        self.lease: dict[str, Any] = {}
        self.now = datetime.min

    def __call__(self, sql: DriverSQL) -> Admission:
        if self.decided is None or self.decided["outcome"] == "slow":
            return self.store._admit(self.caller, self.req, sql)
        return self.store._admit_decided(self, sql)


class LeaseOp:
    """A heartbeat, or a release, in a group commit: on the lease read with its batch in Postgres
    (``decided``), else on the one :meth:`hub_extension.store.QuotaStore._own_lease` reads."""

    __slots__ = ("caller", "decided", "gpu_seconds", "lease_id", "now", "release", "store")

    def __init__(self, store: QuotaStore, caller: Caller, lease_id: str, *, release: bool = False,
                 gpu_seconds: float | None = None) -> None:
        self.store, self.caller, self.lease_id = store, caller, lease_id
        self.release, self.gpu_seconds = release, gpu_seconds
        self.decided: dict[str, Any] | None = None
        self.now = datetime.min

    def __call__(self, sql: DriverSQL) -> dict[str, Any]:
        if self.decided is None or self.decided["outcome"] == "slow":
            now = self.store.clock()
            lease = self.store._own_lease(sql, self.caller, self.lease_id, now)
        else:  # the batch holds the caller's lock, and they had no lease to reclaim
            now, lease = self.now, owned(self.decided["lease"], self.caller, self.lease_id)
        if self.release:
            return self.store._release(sql, now, self.caller, lease, self.gpu_seconds)
        return self.store._heartbeat(sql, now, lease)
