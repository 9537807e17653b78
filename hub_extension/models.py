"""SQLAlchemy tables of the quota service: policies, leases, per-user lock rows and the ledger.

The schema is owned by the alembic migrations in ``migrations/``; a test checks that these
models and the migrated database never drift apart.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the quota tables."""


class Policy(Base):
    """Limits for one subject: ``kind`` is ``default`` (name ``*``), ``group`` or ``user``.

    A ``None`` field means "not set here": it falls through to the next less specific policy.
    """

    __tablename__ = "quota_policies"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_policy_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_runs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_gpus_per_run: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_hours_budget: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    allowed_pools: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    updated_by: Mapped[str] = mapped_column(String(255))


class Lease(Base):
    """GPUs held by one admitted run or sweep, until released or expired."""

    __tablename__ = "quota_leases"
    __table_args__ = (
        UniqueConstraint("user", "request_id", name="uq_lease_request"),
        # admission reads a user's active leases and the edge of their window: never their whole history
        # (on Postgres only those rows, so that no plan can pick them for another read: migration 0004)
        Index("ix_quota_leases_user_status", "user", "status", postgresql_where=text("status = 'active'")),
        Index("ix_quota_leases_user_ended_at", "user", "ended_at", postgresql_where=text("ended_at IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    groups: Mapped[list[str]] = mapped_column(JSON)
    request_id: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(200))
    pool: Mapped[str] = mapped_column(String(63))
    gpus: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    gpus_total: Mapped[int] = mapped_column(Integer)
    estimated_seconds: Mapped[float] = mapped_column(Float)
    ttl_seconds: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    gpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class UserLock(Base):
    """One row per user; admission locks it (``SELECT ... FOR UPDATE``) on Postgres."""

    __tablename__ = "quota_user_locks"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)


class UsageHour(Base):
    """GPU-seconds of the leases a user ended in one clock hour (UTC), keyed by the hour's start.

    Written in the transaction that ends the lease, so the GPU-hour window is a sum over at most
    ``window_hours + 1`` rows, however long the history grows.
    """

    __tablename__ = "quota_usage_hours"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float)


class LedgerEntry(Base):
    """One immutable audit event: admitted, refused, released, expired or policy.

    Database triggers (see the first migration) reject UPDATE and DELETE on this table.
    """

    __tablename__ = "quota_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    event: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(255), index=True)
    lease_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pool: Mapped[str | None] = mapped_column(String(63), nullable=True)
    gpus_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)
