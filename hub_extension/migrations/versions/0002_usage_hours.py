"""Bounded admission reads: per-user hourly GPU-second totals and per-user composite lease indexes.

Before this, every admission summed the GPU-seconds of all of a user's ended leases in the window
and found their active leases through an index on ``user`` alone, so its cost grew with history.
The upgrade fills ``quota_usage_hours`` from the leases already ended.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _hour_of(column: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"date_trunc('hour', {column})"
    # SQLite stores DateTime as text 'YYYY-MM-DD HH:MM:SS[.ffffff]', the form strftime gives back
    return f"strftime('%Y-%m-%d %H:00:00.000000', {column})"


def upgrade() -> None:
    op.create_table(
        "quota_usage_hours",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("hour", sa.DateTime(), primary_key=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
    )
    op.execute(
        'INSERT INTO quota_usage_hours ("user", hour, gpu_seconds) '
        f'SELECT "user", {_hour_of("ended_at")}, SUM(COALESCE(gpu_seconds, 0)) FROM quota_leases '
        f'WHERE ended_at IS NOT NULL GROUP BY "user", {_hour_of("ended_at")}'
    )
    op.create_index("ix_quota_leases_user_status", "quota_leases", ["user", "status"])
    op.create_index("ix_quota_leases_user_ended_at", "quota_leases", ["user", "ended_at"])
    op.drop_index("ix_quota_leases_user", table_name="quota_leases")


def downgrade() -> None:
    op.create_index("ix_quota_leases_user", "quota_leases", ["user"])
    op.drop_index("ix_quota_leases_user_ended_at", table_name="quota_leases")
    op.drop_index("ix_quota_leases_user_status", table_name="quota_leases")
    op.drop_table("quota_usage_hours")
