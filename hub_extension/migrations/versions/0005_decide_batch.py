"""Postgres: a group commit decided in one server call, its heartbeats and releases included.

``quota_decide_batch(users, requests)`` takes over from ``quota_admit_batch`` (migration 0003, left in
place for a replica of the older version until it is restarted): besides deciding admissions, it
reads the lease of each heartbeat and release of the batch (so they cost no round trip of their
own, nor a second lock of their user), writes an admitted request's lease from the request itself
and writes its ledger entry (a refusal's stays in Python, which words it). The window's edges and
the policy rows are each written once (``pg_admission.window_edges_plpgsql``, ``_POLICIES_OF_REQUEST``).

The SQL is literal text, generated once from ``pg_admission.decide_function_sql()`` when this
migration was written (see migration 0003 and ``tests/hub_extension/test_server_functions.py``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

# ruff: noqa: E501  (the SQL is the generated text, frozen as it is: its long lines included)

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUOTA_DECIDE_BATCH = r"""CREATE OR REPLACE FUNCTION quota_decide_batch(users jsonb, requests jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $decide$
DECLARE
  r jsonb; p jsonb; u text; cur_user text; cur text; r_pool text; now_ timestamp; since timestamp;
  first_whole timestamp; slow boolean; known jsonb; lim record; n_runs integer; n_gpus integer;
  used_seconds double precision; policies jsonb; fits boolean;
  answers jsonb[] := '{}';  -- appended in place (a jsonb array would be copied whole at each answer)
BEGIN
  -- every user of the batch, in name order: the order every transaction takes them in (no deadlock)
  INSERT INTO quota_user_locks ("user") SELECT value FROM jsonb_array_elements_text(users) ORDER BY 1
    ON CONFLICT ("user") DO UPDATE SET "user" = excluded."user";
  FOR i IN 0 .. jsonb_array_length(requests) - 1 LOOP
    r := requests -> i; u := r ->> 'user'; now_ := (r ->> 'now')::timestamp;
    IF u IS DISTINCT FROM cur_user THEN
      cur_user := u; cur := NULL;
      slow := EXISTS (SELECT "id", "user", "groups", "request_id", "label", "pool", "gpus", "concurrency", "gpus_total", "estimated_seconds", "ttl_seconds", "status", "created_at", "expires_at", "ended_at", "gpu_seconds" FROM quota_leases WHERE "user" = u AND status = 'active' AND expires_at < now_);
    END IF;
    IF slow THEN  -- leases to reclaim: Python does it, and runs this user's operations after it
      answers := array_append(answers, jsonb_build_object('outcome', 'slow'));
      CONTINUE;
    END IF;
    IF r ? 'lease_id' THEN  -- a heartbeat or a release: Python does it, with the lease read here
      SELECT to_jsonb(l) INTO known FROM (SELECT "id", "user", "groups", "request_id", "label", "pool", "gpus", "concurrency", "gpus_total", "estimated_seconds", "ttl_seconds", "status", "created_at", "expires_at", "ended_at", "gpu_seconds" FROM quota_leases WHERE id = (r ->> 'lease_id')) l;
      answers := array_append(answers, jsonb_build_object('outcome', 'lease', 'lease', known));
      CONTINUE;
    END IF;
    r_pool := r ->> 'pool';
    IF r ->> 'groups' IS DISTINCT FROM cur THEN
      -- a user's state, once a batch: the batch holds their lock, so only its own leases change it
      cur := r ->> 'groups'; policies := NULL;
      SELECT coalesce(max(max_gpus) FILTER (WHERE kind = 'user'), max(max_gpus) FILTER (WHERE kind = 'group'), max(max_gpus) FILTER (WHERE kind = 'default')) AS max_gpus,
      coalesce(max(max_runs) FILTER (WHERE kind = 'user'), max(max_runs) FILTER (WHERE kind = 'group'), max(max_runs) FILTER (WHERE kind = 'default')) AS max_runs,
      coalesce(max(max_gpus_per_run) FILTER (WHERE kind = 'user'), max(max_gpus_per_run) FILTER (WHERE kind = 'group'), max(max_gpus_per_run) FILTER (WHERE kind = 'default')) AS max_gpus_per_run,
      coalesce(max(gpu_hours_budget) FILTER (WHERE kind = 'user'), max(gpu_hours_budget) FILTER (WHERE kind = 'group'), max(gpu_hours_budget) FILTER (WHERE kind = 'default')) AS gpu_hours_budget,
      coalesce(max(window_hours) FILTER (WHERE kind = 'user'), max(window_hours) FILTER (WHERE kind = 'group'), max(window_hours) FILTER (WHERE kind = 'default')) AS window_hours,
        CASE WHEN bool_or(pools IS NOT NULL) FILTER (WHERE kind = 'user') THEN coalesce(bool_or(pools ? r_pool) FILTER (WHERE kind = 'user'), false) WHEN bool_or(pools IS NOT NULL) FILTER (WHERE kind = 'group') THEN coalesce(bool_or(pools ? r_pool) FILTER (WHERE kind = 'group'), false) WHEN bool_or(pools IS NOT NULL) FILTER (WHERE kind = 'default') THEN coalesce(bool_or(pools ? r_pool) FILTER (WHERE kind = 'default'), false) ELSE true END AS pool_ok
      INTO lim FROM (SELECT *, nullif(allowed_pools::jsonb, 'null') AS pools FROM quota_policies WHERE (kind = 'user' AND name = u) OR kind = 'default'
          OR (kind = 'group' AND name IN (SELECT jsonb_array_elements_text(r -> 'groups')))) policy;
      SELECT count(*), coalesce(sum(gpus_total), 0),
        coalesce(sum(gpus_total * greatest(0, extract(epoch FROM now_ - created_at)))::double precision, 0)
      INTO n_runs, n_gpus, used_seconds FROM quota_leases WHERE "user" = u AND status = 'active';
      since := now_ - make_interval(secs => coalesce(lim.window_hours, 168.0) * 3600);
      first_whole := date_trunc('hour', since);
      IF first_whole < since THEN first_whole := first_whole + interval '1 hour'; END IF;
      used_seconds := used_seconds + (SELECT (SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_usage_hours WHERE "user" = u AND hour >= first_whole) + (SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_leases WHERE "user" = u AND ended_at >= since AND ended_at < first_whole));
    END IF;
    SELECT to_jsonb(l) INTO known FROM (SELECT "id", "user", "groups", "request_id", "label", "pool", "gpus", "concurrency", "gpus_total", "estimated_seconds", "ttl_seconds", "status", "created_at", "expires_at", "ended_at", "gpu_seconds" FROM quota_leases
      WHERE "user" = u AND request_id = r ->> 'request_id') l;
    IF known IS NOT NULL THEN
      answers := array_append(answers, jsonb_build_object('outcome', 'known', 'lease', known));
      CONTINUE;
    END IF;
    -- check_request's conditions, all of them (which one failed is Python's to say)
    fits := lim.pool_ok
      AND (lim.max_gpus_per_run IS NULL OR (r ->> 'gpus')::integer <= lim.max_gpus_per_run)
      AND (lim.max_runs IS NULL OR n_runs + 1 <= lim.max_runs)
      AND (lim.max_gpus IS NULL OR n_gpus + (r ->> 'gpus_total')::integer <= lim.max_gpus)
      AND (lim.gpu_hours_budget IS NULL OR (r ->> 'gpus_total')::integer <= 0
           OR used_seconds / 3600.0
              + (r ->> 'gpus_total')::integer * (r ->> 'estimated_seconds')::double precision / 3600.0
              <= lim.gpu_hours_budget);
    IF fits THEN  -- the request holds the lease's columns; its ledger entry is written here too
      p := r;
      INSERT INTO quota_leases ("id", "user", "groups", "request_id", "label", "pool", "gpus", "concurrency", "gpus_total", "estimated_seconds", "ttl_seconds", "status", "created_at", "expires_at", "ended_at", "gpu_seconds") VALUES ((p ->> 'id')::text, (p ->> 'user')::text, (p -> 'groups')::json, (p ->> 'request_id')::text, (p ->> 'label')::text, (p ->> 'pool')::text, (p ->> 'gpus')::integer, (p ->> 'concurrency')::integer, (p ->> 'gpus_total')::integer, (p ->> 'estimated_seconds')::double precision, (p ->> 'ttl_seconds')::double precision, (p ->> 'status')::text, (p ->> 'created_at')::timestamp, (p ->> 'expires_at')::timestamp, (p ->> 'ended_at')::timestamp, (p ->> 'gpu_seconds')::double precision);
      p := r || jsonb_build_object('at', now_, 'event', 'admitted', 'actor', u, 'lease_id', r -> 'id');
      INSERT INTO quota_ledger ("at", "event", "actor", "user", "lease_id", "request_id", "label", "pool", "gpus_total", "gpu_seconds", "detail") VALUES ((p ->> 'at')::timestamp, (p ->> 'event')::text, (p ->> 'actor')::text, (p ->> 'user')::text, (p ->> 'lease_id')::text, (p ->> 'request_id')::text, (p ->> 'label')::text, (p ->> 'pool')::text, (p ->> 'gpus_total')::integer, (p ->> 'gpu_seconds')::double precision, (p -> 'detail')::json);
      n_runs := n_runs + 1;  -- its GPU-time so far is nothing: created now
      n_gpus := n_gpus + (r ->> 'gpus_total')::integer;
      answers := array_append(answers, jsonb_build_object('outcome', 'admitted'));
    ELSE
      IF policies IS NULL THEN
        SELECT coalesce(jsonb_agg(to_jsonb(policy)), '[]') INTO policies FROM (SELECT "kind", "name", "max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours", "allowed_pools"
          FROM quota_policies WHERE (kind = 'user' AND name = u) OR kind = 'default'
          OR (kind = 'group' AND name IN (SELECT jsonb_array_elements_text(r -> 'groups')))) policy;
      END IF;
      answers := array_append(answers, jsonb_build_object('outcome', 'refused', 'policies', policies,
        'usage', jsonb_build_object('gpus_in_use', n_gpus, 'runs_active', n_runs, 'gpu_seconds_in_window', used_seconds)));
    END IF;
  END LOOP;
  RETURN to_jsonb(answers);
END
$decide$"""


#: each server function this migration creates, by name: its ``CREATE OR REPLACE FUNCTION`` statement
FUNCTIONS = {"quota_decide_batch": QUOTA_DECIDE_BATCH}


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sql in FUNCTIONS.values():
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in reversed(FUNCTIONS):
            op.execute(f"DROP FUNCTION IF EXISTS {name}(jsonb, jsonb)")
