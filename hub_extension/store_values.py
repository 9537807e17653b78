"""The quota store's values: who calls, what they ask, what they get, and the pure conversions between
database rows and :mod:`hub_extension.policy`'s types (no database access here)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from .errors import LeaseNotFound, RequestIdConflict
from .models import Policy
from .policy import Limits, PolicyValues, Refusal, Request, Usage, resolve_limits


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


def lease_to_dict(lease: Mapping[Any, Any]) -> dict[str, Any]:
    """JSON form of a lease (a row mapping of ``quota_leases``)."""
    ended = lease["ended_at"]
    return {
        **{key: lease[key] for key in LEASE_FIELDS},
        "created_at": lease["created_at"].isoformat() + "Z",
        "expires_at": lease["expires_at"].isoformat() + "Z",
        "ended_at": ended.isoformat() + "Z" if ended else None,
        "gpu_seconds": lease["gpu_seconds"],
    }


LEASE_FIELDS = ("id", "user", "request_id", "label", "pool", "gpus", "concurrency", "gpus_total",
                "estimated_seconds", "ttl_seconds", "status")


def check_same_request(known: Mapping[str, Any], req: AdmissionRequest) -> None:
    """A request id used again must ask for the same thing (409 otherwise)."""
    same = (known["gpus"], known["pool"], known["concurrency"]) == (req.gpus, req.pool, req.concurrency)
    if not same:
        raise RequestIdConflict(
            f"Request id '{req.request_id}' was already used for a different request "
            f"({known['gpus']} GPU(s) × {known['concurrency']} on pool '{known['pool']}'). "
            "Use a new request id for a new submission."
        )


def ledger_entry(json_value: Callable[[Any], Any], now: datetime, event: str, actor: str, user: str,
                 req: AdmissionRequest | None = None, **fields: Any) -> dict[str, Any]:
    """The parameters of one ``insert_ledger`` (``json_value``: the connection's form of the JSON detail)."""
    row = dict.fromkeys(("lease_id", "request_id", "label", "pool", "gpus_total", "gpu_seconds", "detail"))
    if req is not None:
        row.update(request_id=req.request_id, label=req.label, pool=req.pool)
    row.update(fields)
    return {**row, "detail": json_value(row["detail"]), "at": now, "event": event, "actor": actor, "user": user}


def owned(lease: dict[str, Any] | None, caller: Caller, lease_id: str) -> dict[str, Any]:
    """``lease`` (the row of ``lease_id``, ``None`` if there is none) if it is ``caller``'s: else 404."""
    if lease is None or lease["user"] != caller.name:
        raise LeaseNotFound(f"You have no lease '{lease_id}'.")
    return lease


def hour_start(at: datetime) -> datetime:
    """The start of ``at``'s clock hour: the key of its ``quota_usage_hours`` row."""
    return at.replace(minute=0, second=0, microsecond=0)


def window_edges(now: datetime, window_hours: float) -> tuple[datetime, datetime]:
    """The GPU-hour window ending at ``now``: its start, and the first whole clock hour in it (from which
    ``quota_usage_hours`` rows count whole; the leases that ended before it count one by one)."""
    since = now - timedelta(hours=window_hours)
    first_whole = hour_start(since)
    if first_whole < since:
        first_whole += timedelta(hours=1)
    return since, first_whole


def request_of(req: AdmissionRequest) -> Request:
    """The part of ``req`` that limits are checked against."""
    return Request(gpus=req.gpus, pool=req.pool, concurrency=req.concurrency, estimated_seconds=req.estimated_seconds)


def first_value(rows: list[dict[str, Any]]) -> float:
    """The first column of the first row, as a float (a sum that may be NULL)."""
    return float(next(iter(rows[0].values())) or 0.0)


def resolve_policy_rows(user: str, groups: tuple[str, ...], policies: list[dict[str, Any]]) -> Limits:
    """:func:`~hub_extension.policy.resolve_limits` of policy rows as the store reads them (cached)."""
    # sorted: the database's order is no part of the key (resolve_limits does not depend on it)
    rows = tuple(sorted((_row_values(row) for row in policies), key=lambda p: (p.kind, p.name)))
    return _resolve_rows(user, tuple(sorted(groups)), rows)


@lru_cache(maxsize=4096)
def _resolve_rows(user: str, groups: tuple[str, ...], rows: tuple[PolicyValues, ...]) -> Limits:
    # the policies just read are the key (Limits is frozen): a hit is exactly what resolving again gives
    return resolve_limits(user, groups, rows)


def _row_values(row: Mapping[str, Any]) -> PolicyValues:
    values = dict(row)
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


def remaining(limits: Limits, usage: Usage) -> dict[str, Any]:
    """What is left of each limit (``None``: unlimited)."""
    def left(limit: float | None, used: float) -> float | None:
        return None if limit is None else max(0, limit - used)

    return {
        "gpus": left(limits.max_gpus, usage.gpus_in_use),
        "runs": left(limits.max_runs, usage.runs_active),
        "gpu_hours": None if limits.gpu_hours_budget is None
        else round(max(0.0, limits.gpu_hours_budget - usage.gpu_hours_in_window), 4),
    }
