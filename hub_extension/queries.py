"""The SQL statements of the quota store's hot paths, built once with bind parameters.

Building a SQLAlchemy expression costs more Python than SQLite takes to run it, and admission runs
thousands of times a second: each statement here is built at import and reused, so SQLAlchemy's
compiled cache serves every execution. Every statement is bounded by a user's active leases or
the hours of a window, never by the length of the history.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Insert,
    Select,
    Table,
    Update,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from .models import Lease, LedgerEntry, Policy, UsageHour, UserLock

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"
LEASES, LEDGER, USAGE_HOURS = (cast(Table, model.__table__) for model in (Lease, LedgerEntry, UsageHour))
POLICY_COLUMNS = ("max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours", "allowed_pools")

_user = LEASES.c.user == bindparam("user")

ACTIVE_OF_USER: Select[Any] = select(LEASES).where(_user, LEASES.c.status == ACTIVE)
#: a user's active leases, plus the lease of ``request_id`` in any state (the replay check): one read,
#: two index searches (as one ``OR``, SQLite would walk every lease of the user)
ACTIVE_OR_KNOWN: CompoundSelect = ACTIVE_OF_USER.union_all(select(LEASES).where(
    _user, LEASES.c.request_id == bindparam("request_id"), LEASES.c.status != ACTIVE))
LEASE_BY_ID: Select[Any] = select(LEASES).where(LEASES.c.id == bindparam("lease_id"))
OVERDUE: Select[Any] = select(LEASES).where(LEASES.c.status == ACTIVE, LEASES.c.expires_at < bindparam("now"))
OVERDUE_OF_USER: Select[Any] = OVERDUE.where(_user)
LIVE_OF_USER: Select[Any] = ACTIVE_OF_USER.where(LEASES.c.expires_at >= bindparam("now")).order_by(LEASES.c.created_at)

POLICIES_FOR: Select[Any] = select(*(getattr(Policy, name) for name in ("kind", "name", *POLICY_COLUMNS))).where(
    ((Policy.kind == "user") & (Policy.name == bindparam("user")))
    | ((Policy.kind == "group") & Policy.name.in_(bindparam("groups", expanding=True)))
    | (Policy.kind == "default")
)

_whole_hours: ColumnElement[Any] = select(func.coalesce(func.sum(USAGE_HOURS.c.gpu_seconds), 0.0)).where(
    USAGE_HOURS.c.user == bindparam("user"), USAGE_HOURS.c.hour >= bindparam("first_whole_hour"),
).scalar_subquery()
_first_part_hour: ColumnElement[Any] = select(func.coalesce(func.sum(LEASES.c.gpu_seconds), 0.0)).where(
    _user, LEASES.c.ended_at >= bindparam("since"), LEASES.c.ended_at < bindparam("first_whole_hour"),
).scalar_subquery()
#: GPU-seconds of a user's leases ended since ``since``: whole hours from ``quota_usage_hours``,
#: the rest of the first hour from the leases themselves (an index range over less than an hour)
ENDED_SINCE: Select[Any] = select(_whole_hours + _first_part_hour)

INSERT_LEASE: Insert = insert(LEASES)
INSERT_LEDGER: Insert = insert(LEDGER)
EXTEND_LEASE: Update = update(LEASES).where(LEASES.c.id == bindparam("lease_id")).values(
    expires_at=bindparam("expires_at"))
END_LEASE: Update = update(LEASES).where(LEASES.c.id == bindparam("lease_id")).values(
    status=bindparam("status"), ended_at=bindparam("ended_at"), gpu_seconds=bindparam("gpu_seconds"))


def _add_hour(dialect: Any) -> Insert:
    stmt = dialect.insert(USAGE_HOURS)
    return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["user", "hour"],
        set_={"gpu_seconds": USAGE_HOURS.c.gpu_seconds + stmt.excluded.gpu_seconds},
    )


#: add GPU-seconds to a user's hour (``user``, ``hour``, ``gpu_seconds``), per dialect
ADD_TO_HOUR: dict[str, Insert] = {"sqlite": _add_hour(sqlite), "postgresql": _add_hour(postgresql)}

_lock = postgresql.insert(UserLock).values(user=bindparam("user"))
#: Postgres: an upsert that touches the user's lock row holds its row lock to the commit, in one
#: round trip (what ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE`` took two for)
LOCK_USER: Insert = _lock.on_conflict_do_update(index_elements=["user"], set_={"user": _lock.excluded.user})
