"""Postgres: a group commit's admissions decided inside the server, in one call.

``quota_decide_batch(users, requests)`` locks every user of the batch (in name order, as every
transaction takes them), then takes the requests in order: a known request id answers its lease;
otherwise the user's limits are resolved from their policy rows, their usage summed, and a request
that fits gets its lease and its ledger entry inserted. Each statement in the function takes a fresh
snapshot (it is ``VOLATILE``; READ COMMITTED), so a request sees every commit before its user's lock
and every lease of the requests before it: the argument of :mod:`hub_extension.store` holds request
by request. A heartbeat's or a release's request only reads its lease (under the same lock); Python
then writes what it changes, as it does without the function.

The function only says *whether* a request fits; the refusal itself (which limit, the message) and
its ledger entry stay in Python (:func:`hub_extension.policy.check_request`), from the policy rows
and usage the function hands back. ``tests/hub_extension/test_pg_admission.py`` checks a table of
policies, usage and requests against ``check_request``. A user with overdue leases (to reclaim) is
left to the Python path for the rest of the batch (``slow``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from .driver_sql import (
    LEASE_COLUMNS,
    POLICY_COLUMNS,
    STEP_FUNCTION,
    TYPED_IN_JSON,
    DriverSQL,
    param_types,
    statement_with,
    step_function_sql,
    step_statement,
    typed_rows,
)
from .policy import DEFAULT_WINDOW_HOURS

log = logging.getLogger(__name__)

DECIDE_FUNCTION = "quota_decide_batch"

#: the policy rows that apply to user ``u`` with the groups of request ``r`` (both reads of the function)
_POLICIES_OF_REQUEST = """FROM quota_policies WHERE (kind = 'user' AND name = u) OR kind = 'default'
          OR (kind = 'group' AND name IN (SELECT jsonb_array_elements_text(r -> 'groups')))"""


def _limit(name: str) -> str:
    """A numeric limit as :func:`hub_extension.policy.resolve_limits` resolves it: the user's, else the
    largest of the groups', else the default's."""
    levels = ", ".join(f"max({name}) FILTER (WHERE kind = '{kind}')" for kind in ("user", "group", "default"))
    return f"coalesce({levels}) AS {name}"


def _pool_ok() -> str:
    """``allowed_pools`` as resolve_limits has it: the first level that sets it (groups: their union)."""
    levels = " ".join(f"WHEN bool_or(pools IS NOT NULL) FILTER (WHERE kind = '{kind}') "
                      f"THEN coalesce(bool_or(pools ? r_pool) FILTER (WHERE kind = '{kind}'), false)"
                      for kind in ("user", "group", "default"))
    return f"CASE {levels} ELSE true END AS pool_ok"


def window_edges_plpgsql(now: str, hours: str, since: str, first_whole: str) -> str:
    """:func:`hub_extension.store_values.window_edges` as plpgsql: ``since`` and ``first_whole`` from
    ``now`` and ``hours`` (NULL: the default window)."""
    return (f"{since} := {now} - make_interval(secs => coalesce({hours}, {DEFAULT_WINDOW_HOURS}) * 3600);\n"
            f"      {first_whole} := date_trunc('hour', {since});\n"
            f"      IF {first_whole} < {since} THEN {first_whole} := {first_whole} + interval '1 hour'; END IF;")


def decide_function_sql() -> str:
    """``CREATE OR REPLACE FUNCTION quota_decide_batch`` (a migration holds it as literal text: a change needs a new one)."""
    types = param_types()
    limits = ",\n      ".join(_limit(name) for name in
                               ("max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours"))
    overdue = statement_with("overdue_of_user", user="u", now="now_")
    ended = statement_with("ended_since", user="u", since="since", first_whole_hour="first_whole")
    lease_by_id = statement_with("lease_by_id", lease_id="(r ->> 'lease_id')")
    return f"""CREATE OR REPLACE FUNCTION {DECIDE_FUNCTION}(users jsonb, requests jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $decide$
DECLARE
  r jsonb; p jsonb; u text; cur_user text; cur text; r_pool text; now_ timestamp; since timestamp;
  first_whole timestamp; slow boolean; known jsonb; lim record; n_runs integer; n_gpus integer;
  used_seconds double precision; policies jsonb; fits boolean;
  answers jsonb[] := '{{}}';  -- appended in place (a jsonb array would be copied whole at each answer)
BEGIN
  -- every user of the batch, in name order: the order every transaction takes them in (no deadlock)
  INSERT INTO quota_user_locks ("user") SELECT value FROM jsonb_array_elements_text(users) ORDER BY 1
    ON CONFLICT ("user") DO UPDATE SET "user" = excluded."user";
  FOR i IN 0 .. jsonb_array_length(requests) - 1 LOOP
    r := requests -> i; u := r ->> 'user'; now_ := (r ->> 'now')::timestamp;
    IF u IS DISTINCT FROM cur_user THEN
      cur_user := u; cur := NULL;
      slow := EXISTS ({overdue});
    END IF;
    IF slow THEN  -- leases to reclaim: Python does it, and runs this user's operations after it
      answers := array_append(answers, jsonb_build_object('outcome', 'slow'));
      CONTINUE;
    END IF;
    IF r ? 'lease_id' THEN  -- a heartbeat or a release: Python does it, with the lease read here
      SELECT to_jsonb(l) INTO known FROM ({lease_by_id}) l;
      answers := array_append(answers, jsonb_build_object('outcome', 'lease', 'lease', known));
      CONTINUE;
    END IF;
    r_pool := r ->> 'pool';
    IF r ->> 'groups' IS DISTINCT FROM cur THEN
      -- a user's state, once a batch: the batch holds their lock, so only its own leases change it
      cur := r ->> 'groups'; policies := NULL;
      SELECT {limits},
        {_pool_ok()}
      INTO lim FROM (SELECT *, nullif(allowed_pools::jsonb, 'null') AS pools {_POLICIES_OF_REQUEST}) policy;
      SELECT count(*), coalesce(sum(gpus_total), 0),
        coalesce(sum(gpus_total * greatest(0, extract(epoch FROM now_ - created_at)))::double precision, 0)
      INTO n_runs, n_gpus, used_seconds FROM quota_leases WHERE "user" = u AND status = 'active';
      {window_edges_plpgsql("now_", "lim.window_hours", "since", "first_whole")}
      used_seconds := used_seconds + ({ended});
    END IF;
    SELECT to_jsonb(l) INTO known FROM (SELECT {LEASE_COLUMNS} FROM quota_leases
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
      {step_statement("insert_lease", types)}
      p := r || jsonb_build_object('at', now_, 'event', 'admitted', 'actor', u, 'lease_id', r -> 'id');
      {step_statement("insert_ledger", types)}
      n_runs := n_runs + 1;  -- its GPU-time so far is nothing: created now
      n_gpus := n_gpus + (r ->> 'gpus_total')::integer;
      answers := array_append(answers, jsonb_build_object('outcome', 'admitted'));
    ELSE
      IF policies IS NULL THEN
        SELECT coalesce(jsonb_agg(to_jsonb(policy)), '[]') INTO policies FROM (SELECT {POLICY_COLUMNS}
          {_POLICIES_OF_REQUEST}) policy;
      END IF;
      answers := array_append(answers, jsonb_build_object('outcome', 'refused', 'policies', policies,
        'usage', jsonb_build_object('gpus_in_use', n_gpus, 'runs_active', n_runs, 'gpu_seconds_in_window', used_seconds)));
    END IF;
  END LOOP;
  RETURN to_jsonb(answers);
END
$decide$"""


def decide_batch(sql: DriverSQL, users: Sequence[str], requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One call of ``quota_decide_batch`` (after the waiting writes): an outcome per request, in order."""
    answers: list[dict[str, Any]] = sql.call(DECIDE_FUNCTION, sorted(set(users)), list(requests))
    for answer in answers:
        if answer.get("lease") is not None:
            answer["lease"] = typed_rows([answer["lease"]], TYPED_IN_JSON)[0]
        if "policies" in answer:
            answer["policies"] = typed_rows(answer["policies"], TYPED_IN_JSON)
    return answers


# the functions a migration created, against what this code calls ---------------------------------

_BODY = re.compile(r"\bAS (\$\w*\$)(.*)\1\s*$", re.DOTALL)


def server_functions() -> dict[str, str]:
    """Each server function this code calls, by name: its ``CREATE OR REPLACE FUNCTION`` as the code
    builds it now (what the newest migration that creates it must hold, as literal text)."""
    return {STEP_FUNCTION: step_function_sql(), DECIDE_FUNCTION: decide_function_sql()}


def function_body(create_sql: str) -> str:
    """The body of a ``CREATE FUNCTION ... AS $tag$ body $tag$`` (what Postgres keeps as ``prosrc``)."""
    match = _BODY.search(create_sql)
    if match is None:
        raise ValueError(f"no dollar-quoted body in {create_sql[:60]!r}...")
    return match[2]


def stale_functions(conn: Connection) -> list[str]:
    """The server functions missing from the database or not the ones this code expects (compared by
    their source text, read once at start): empty when admission may run inside Postgres."""
    stale = []
    for name, sql in server_functions().items():
        # resolved through search_path, as the call will be; NULL when there is no such function
        found = conn.exec_driver_sql("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%(f)s)",
                                     {"f": f"{name}(jsonb, jsonb)"}).scalar()
        if found != function_body(sql):
            stale.append(name)
    return stale


def use_server_functions(conn: Connection) -> bool:
    """Whether this Postgres database has the functions this code expects; if not, say so in the log
    (admission then runs statement by statement, correct but slower)."""
    stale = stale_functions(conn)
    if stale:
        log.warning("the quota database's functions %s are missing or not the ones this version of nbscale "
                    "expects (a database not migrated to the latest revision, or migrated by another version): "
                    "deciding admissions statement by statement, which is correct but slower. Restart the "
                    "quota service of this version (it migrates at start), or run `alembic -c "
                    "hub_extension/alembic.ini -x url=URL upgrade head`", ", ".join(stale))
    return not stale
