"""First schema: policies, leases, per-user lock rows and the append-only ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PG_APPEND_ONLY = """
CREATE FUNCTION quota_ledger_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'quota_ledger is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER quota_ledger_no_update BEFORE UPDATE OR DELETE ON quota_ledger
  FOR EACH ROW EXECUTE FUNCTION quota_ledger_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "quota_policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("max_runs", sa.Integer(), nullable=True),
        sa.Column("max_gpus_per_run", sa.Integer(), nullable=True),
        sa.Column("gpu_hours_budget", sa.Float(), nullable=True),
        sa.Column("window_hours", sa.Float(), nullable=True),
        sa.Column("allowed_pools", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("kind", "name", name="uq_policy_subject"),
    )
    op.create_table(
        "quota_leases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("pool", sa.String(63), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("gpus_total", sa.Integer(), nullable=False),
        sa.Column("estimated_seconds", sa.Float(), nullable=False),
        sa.Column("ttl_seconds", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=True),
        sa.UniqueConstraint("user", "request_id", name="uq_lease_request"),
    )
    op.create_index("ix_quota_leases_user", "quota_leases", ["user"])
    op.create_index("ix_quota_leases_status", "quota_leases", ["status"])
    op.create_table("quota_user_locks", sa.Column("user", sa.String(255), primary_key=True))
    op.create_table(
        "quota_ledger",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("lease_id", sa.String(40), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("pool", sa.String(63), nullable=True),
        sa.Column("gpus_total", sa.Integer(), nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_quota_ledger_at", "quota_ledger", ["at"])
    op.create_index("ix_quota_ledger_user", "quota_ledger", ["user"])
    # the audit trail is append-only at the database level, not only by convention
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
    elif op.get_bind().dialect.name == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER quota_ledger_no_{verb.lower()} BEFORE {verb} ON quota_ledger "
                "BEGIN SELECT RAISE(ABORT, 'quota_ledger is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS quota_ledger_no_update ON quota_ledger")
        op.execute("DROP FUNCTION IF EXISTS quota_ledger_append_only()")
    op.drop_table("quota_ledger")
    op.drop_table("quota_user_locks")
    op.drop_table("quota_leases")
    op.drop_table("quota_policies")
