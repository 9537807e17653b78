"""Postgres: the store's statements, and a group commit's admissions, run inside the server.

``quota_step(writes, reads)`` runs the store's statements (:data:`hub_extension.driver_sql.STATEMENTS`)
in order and returns what the reads found (one call and one round trip instead of one a statement);
``quota_admit_batch(users, requests)`` decides a batch of admissions (:mod:`hub_extension.pg_admission`).
SQLite runs the statements in-process and needs neither.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from alembic import op

from hub_extension.driver_sql import STEP_FUNCTION, step_function_sql
from hub_extension.pg_admission import ADMIT_FUNCTION, admit_function_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(step_function_sql())
        op.execute(admit_function_sql())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {ADMIT_FUNCTION}(jsonb, jsonb)")
        op.execute(f"DROP FUNCTION IF EXISTS {STEP_FUNCTION}(jsonb, jsonb)")
