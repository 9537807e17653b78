"""Postgres: the per-user lease indexes cover only the rows their reads can want (partial indexes).

Postgres plans the admission function's statements once a connection and keeps the plan. On a table
it has not analyzed yet (a new database, for its first minute or so, until autovacuum runs) the
planner cannot tell ``(user, request_id)`` from ``(user, ended_at)`` for the replay check, nor
``(user, status)`` from them for the active leases, and a kept plan that picked the wrong one read
every lease of the user, at each decision, for as long as the connection lived. Restricted to
active leases and to ended ones, each index serves only the reads it was made for, whatever the
statistics say: the choice no longer depends on them. SQLite's planner picks them right without
statistics: its indexes stay whole.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# name: (columns, the rows a Postgres index holds)
INDEXES = {
    "ix_quota_leases_user_status": (["user", "status"], "status = 'active'"),
    "ix_quota_leases_user_ended_at": (["user", "ended_at"], "ended_at IS NOT NULL"),
}


def _rebuild(partial: bool) -> None:
    """Postgres: each index built again (partial or whole) without blocking the table's writers."""
    if op.get_bind().dialect.name != "postgresql":
        return
    with op.get_context().autocommit_block():  # CONCURRENTLY cannot run inside a transaction
        for name, (columns, rows) in INDEXES.items():
            building = f"{name}_new"
            quoted = ", ".join(f'"{column}"' for column in columns)  # "user" is reserved
            where = f" WHERE {rows}" if partial else ""
            # a build that failed half-way leaves an INVALID index under the new name: never keep it
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {building}")
            op.execute(f"CREATE INDEX CONCURRENTLY {building} ON quota_leases ({quoted}){where}")
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"ALTER INDEX {building} RENAME TO {name}")


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
