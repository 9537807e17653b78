"""Administration over the quota store: policies, usage of every user and group, the ledger."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import JSON, DateTime, Float, String, bindparam, delete, select, text

from .errors import QuotaServiceError
from .models import Lease, LedgerEntry, Policy
from .policy import LIMIT_FIELDS
from .store import ACTIVE, QuotaStore, policy_values
from .store_values import window_edges

POLICY_KINDS = ("default", "group", "user")
POLICY_FIELDS = (*LIMIT_FIELDS, "allowed_pools")


class PolicyNotFound(QuotaServiceError):
    """No policy for that subject."""

    http_status = 404


def policy_to_dict(p: Policy) -> dict[str, Any]:
    """JSON form of a policy row."""
    values = policy_values(p)
    out: dict[str, Any] = {"kind": p.kind, "name": p.name}
    for name in POLICY_FIELDS:
        value = getattr(values, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    out["updated_at"] = p.updated_at.isoformat() + "Z"
    out["updated_by"] = p.updated_by
    return out


def _check_subject(kind: str, name: str) -> str:
    if kind not in POLICY_KINDS:
        raise QuotaServiceError(
            f"Unknown policy kind '{kind}'; use one of: {', '.join(POLICY_KINDS)}.",
            errors=[{"loc": ["kind"], "msg": f"must be one of {', '.join(POLICY_KINDS)}"}],
        )
    if kind == "default":
        return "*"
    if not name or len(name) > 255:
        raise QuotaServiceError(
            f"A {kind} policy needs the {kind} name (1 to 255 characters).",
            errors=[{"loc": ["name"], "msg": "required, at most 255 characters"}],
        )
    return name


def set_policy(store: QuotaStore, actor: str, kind: str, name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Create or replace the policy of one subject; written to the ledger. Running leases are untouched."""
    name = _check_subject(kind, name)
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise QuotaServiceError(f"Unknown policy field(s): {', '.join(sorted(unknown))}.")
    with store._write() as s:
        now = store.clock()
        row = s.scalar(select(Policy).where(Policy.kind == kind, Policy.name == name))
        if row is None:
            row = Policy(kind=kind, name=name, updated_at=now, updated_by=actor)
            s.add(row)
        for field_name in POLICY_FIELDS:
            setattr(row, field_name, fields.get(field_name))
        row.updated_at, row.updated_by = now, actor
        s.flush()
        body = policy_to_dict(row)
        s.add(LedgerEntry(at=now, event="policy", actor=actor, user=f"{kind}:{name}", detail=body))
        return body


def delete_policy(store: QuotaStore, actor: str, kind: str, name: str) -> None:
    """Remove one subject's policy (its users fall back to the next level); written to the ledger."""
    name = _check_subject(kind, name)
    with store._write() as s:
        gone = s.execute(delete(Policy).where(Policy.kind == kind, Policy.name == name)).rowcount  # type: ignore[attr-defined]
        if not gone:
            raise PolicyNotFound(f"There is no {kind} policy for '{name}'.")
        s.add(LedgerEntry(at=store.clock(), event="policy", actor=actor, user=f"{kind}:{name}",
                          detail={"deleted": True}))


def list_policies(store: QuotaStore) -> list[dict[str, Any]]:
    """Every policy, default first, then groups, then users."""
    order = {kind: i for i, kind in enumerate(POLICY_KINDS)}
    with store._read() as s:
        rows = list(s.scalars(select(Policy)))
        return [policy_to_dict(p) for p in sorted(rows, key=lambda p: (order.get(p.kind, 9), p.name))]


#: per user who ever ended a lease (found by a loose index scan of ``quota_usage_hours``' key: one
#: seek per user), the window's whole hours from their hourly rows, the part of its first hour and
#: the groups of their latest ended lease from the leases' ``(user, ended_at)`` index: bounded by
#: users and the window, never by the history (SQL written here: SQLAlchemy has no loose index scan)
_ENDED_IN_WINDOW = text("""
WITH RECURSIVE users(name) AS (
    SELECT min("user") FROM quota_usage_hours
    UNION ALL
    SELECT (SELECT min("user") FROM quota_usage_hours WHERE "user" > users.name) FROM users
    WHERE users.name IS NOT NULL
)
SELECT name,
    (SELECT sum(gpu_seconds) FROM quota_usage_hours
     WHERE "user" = name AND hour >= :first_whole_hour) AS whole_hours_seconds,
    (SELECT coalesce(sum(coalesce(gpu_seconds, 0.0)), 0.0) FROM quota_leases
     WHERE "user" = name AND ended_at >= :since AND ended_at < :first_whole_hour) AS first_hour_seconds,
    (SELECT groups FROM quota_leases WHERE "user" = name AND ended_at >= :since
     ORDER BY ended_at DESC LIMIT 1) AS last_groups
FROM users WHERE name IS NOT NULL
""").bindparams(bindparam("since", type_=DateTime()), bindparam("first_whole_hour", type_=DateTime())).columns(
    name=String(), whole_hours_seconds=Float(), first_hour_seconds=Float(), last_groups=JSON())


def _new_usage_row() -> dict[str, Any]:
    return {"gpus_in_use": 0, "runs_active": 0, "gpu_hours_in_window": 0.0, "groups": []}


def usage_overview(store: QuotaStore, window_hours: float = 168.0) -> dict[str, Any]:
    """Live usage per user and per group: GPUs and runs held now, GPU-hours used in the window.

    A user's groups are those of their live leases and of the latest lease they ended in the window.
    """
    with store._read() as s:
        now = store.clock()
        since, first_whole = window_edges(now, window_hours)  # the window's edges, as admission reads them
        users: dict[str, dict[str, Any]] = defaultdict(_new_usage_row)
        live = s.scalars(select(Lease).where(Lease.status == ACTIVE, Lease.expires_at >= now))
        for lease in live:
            row = users[lease.user]
            row["gpus_in_use"] += lease.gpus_total
            row["runs_active"] += 1
            row["gpu_hours_in_window"] += lease.gpus_total * (now - lease.created_at).total_seconds() / 3600
            row["groups"] = sorted(set(row["groups"]) | set(lease.groups))
        ended = s.execute(_ENDED_IN_WINDOW, {"since": since, "first_whole_hour": first_whole})
        for user, whole_hours, first_hour, last_groups in ended:
            if whole_hours is None and last_groups is None:
                continue  # nothing ended in the window
            row = users[user]
            row["gpu_hours_in_window"] += ((whole_hours or 0.0) + first_hour) / 3600
            row["groups"] = sorted(set(row["groups"]) | set(last_groups or ()))
        groups = _group_totals(users)
        return {"window_hours": window_hours, "users": dict(sorted(users.items())), "groups": groups}


def _group_totals(users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each group's sums over its users (rounding each user's GPU-hours first)."""
    groups_out: dict[str, dict[str, Any]] = defaultdict(lambda: {"gpus_in_use": 0, "runs_active": 0,
                                                                 "gpu_hours_in_window": 0.0, "users": []})
    for user, row in sorted(users.items()):
        row["gpu_hours_in_window"] = round(row["gpu_hours_in_window"], 4)
        for group in row["groups"]:
            g = groups_out[group]
            for key in ("gpus_in_use", "runs_active", "gpu_hours_in_window"):
                g[key] += row[key]
            g["users"].append(user)
    return dict(sorted(groups_out.items()))


def ledger_page(store: QuotaStore, *, user: str | None = None, limit: int = 100,
                before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest ledger entries first (optionally one user's, optionally older than ``before_id``)."""
    query = select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if user:
        query = query.where(LedgerEntry.user == user)
    if before_id:
        query = query.where(LedgerEntry.id < before_id)
    with store._read() as s:
        return [{
            "id": e.id, "at": e.at.isoformat() + "Z", "event": e.event, "actor": e.actor, "user": e.user,
            "lease_id": e.lease_id, "request_id": e.request_id, "label": e.label, "pool": e.pool,
            "gpus_total": e.gpus_total, "gpu_seconds": e.gpu_seconds, "detail": e.detail,
        } for e in s.scalars(query)]
