"""Limit resolution and refusal messages, without a hub (pure functions)."""

from __future__ import annotations

import pytest

from hub_extension.policy import (
    Limits,
    PolicyValues,
    Request,
    Usage,
    check_request,
    resolve_limits,
)


def test_user_override_wins_field_by_field_over_groups_and_default() -> None:
    policies = [
        PolicyValues(kind="default", name="*", max_gpus=1, max_runs=1, gpu_hours_budget=10),
        PolicyValues(kind="group", name="ml", max_gpus=4, allowed_pools=("a100",)),
        PolicyValues(kind="group", name="vision", max_gpus=8, allowed_pools=("t4",)),
        PolicyValues(kind="user", name="alice", max_gpus=2),
        PolicyValues(kind="user", name="bob", max_gpus=100),
    ]
    limits = resolve_limits("alice", ["ml", "vision"], policies)
    assert limits.max_gpus == 2 and limits.sources["max_gpus"] == "user:alice"
    assert limits.max_runs == 1 and limits.sources["max_runs"] == "default"
    assert limits.allowed_pools == ("a100", "t4")  # union of the groups
    assert limits.gpu_hours_budget == 10 and limits.window_hours == 168.0
    carol = resolve_limits("carol", ["ml", "vision"], policies)
    assert carol.max_gpus == 8 and carol.sources["max_gpus"] == "group:vision"  # most generous group
    assert resolve_limits("dave", [], []).max_gpus is None  # no policy: unlimited


def limits(**kw: object) -> Limits:
    return Limits(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("lim", "usage", "req", "limit", "phrases"),
    [
        (limits(allowed_pools=("a100",)), Usage(), Request(gpus=1, pool="t4"), "allowed_pools",
         ["Pool 't4' is not allowed", "a100", "hub admin"]),
        (limits(max_gpus_per_run=2), Usage(), Request(gpus=4, pool="p"), "max_gpus_per_run",
         ["2 GPUs per run", "asks for 4", "at most 2"]),
        (limits(max_runs=2), Usage(runs_active=2), Request(gpus=0, pool="p"), "max_runs",
         ["2 runs at once", "you have 2 running", "Wait for 1 run to finish"]),
        (limits(max_gpus=4), Usage(gpus_in_use=3, runs_active=3), Request(gpus=2, pool="p"), "max_gpus",
         ["4 GPUs in use at once", "you have 3 in use", "asks for 2 GPUs", "at most 1 GPU", "holding 1 GPU"]),
        (limits(max_gpus=4), Usage(gpus_in_use=0), Request(gpus=2, pool="p", concurrency=3), "max_gpus",
         ["3 trials × 2 GPU", "lower the sweep concurrency to 2"]),
        (limits(max_gpus=1), Usage(gpus_in_use=3, runs_active=3), Request(gpus=1, pool="p"), "max_gpus",
         ["1 GPU in use at once", "you have 3 in use", "wait for runs holding 3 GPU(s)"]),
        (limits(gpu_hours_budget=10), Usage(gpu_seconds_in_window=9.5 * 3600), Request(gpus=1, pool="p", estimated_seconds=3600),
         "gpu_hours_budget", ["budget is 10 h per 168 h", "used 9.50 h", "about 1.00 h", "0.50 h left"]),
    ],
)
def test_each_limit_refuses_with_a_message_that_says_what_to_do(lim, usage, req, limit, phrases) -> None:
    refusal = check_request(lim, usage, req)
    assert refusal is not None and refusal.limit == limit
    for phrase in phrases:
        assert phrase in refusal.message, refusal.message
    assert refusal.to_dict()["type"] == "QuotaExceeded"


@pytest.mark.parametrize(
    ("lim", "usage", "req"),
    [
        (limits(max_gpus=4), Usage(gpus_in_use=3), Request(gpus=1, pool="p")),
        (limits(max_gpus=4, max_runs=5), Usage(gpus_in_use=0, runs_active=4), Request(gpus=2, pool="p", concurrency=2)),
        (limits(gpu_hours_budget=1), Usage(gpu_seconds_in_window=3500), Request(gpus=0, pool="p")),  # CPU runs use no budget
        (limits(), Usage(gpus_in_use=1000), Request(gpus=64, pool="anything")),
    ],
)
def test_requests_that_fit_are_admitted(lim, usage, req) -> None:
    assert check_request(lim, usage, req) is None
