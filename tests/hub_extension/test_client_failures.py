"""QuotaClient when the quota service fails during admission: a real HTTP server on 127.0.0.1 that
answers 5xx or answers too late. Each case shows what the service saw, so the retries and their
request id (what makes a retried admission safe) are checked, not only the final error."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from json_service import JsonService

from hub_extension import SERVICE_HEADER
from hub_extension.client import QuotaClient
from workflow_compiler.errors import QuotaUnavailable

LEASE = {"id": "lease-1", "expires_at": "2030-01-01T00:00:00", "gpus_total": 2, "pool": "default",
         "ttl_seconds": 60.0, "status": "active"}
PREFIX = "/services/nbscale-quotas/"


def replies(*plan: int | str) -> JsonService:
    """Answer the n-th request with ``plan[n]`` (the last one repeats): a status, or "sleep" (201 after 3 s)."""

    def answer(method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        reply = plan[min(len(service.seen), len(plan)) - 1]
        if reply == "sleep":
            time.sleep(3)  # the client waits 0.5 s
            reply = 201
        if reply == 201:
            return 201, {"admitted": True, "lease": {**LEASE, "request_id": body["request_id"]}}
        return int(reply), {"message": "database is locked"}

    service = JsonService(answer, headers={SERVICE_HEADER: "1"})  # ``answer`` reads its ``seen``
    return service


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[JsonService]:
    with replies(*request.param) as running:
        yield running


def _admit(service: JsonService) -> Any:
    client = QuotaClient(service.url + PREFIX, "token", timeout=0.5, retries=2)
    try:
        return client.admit(2, "default", 1, 60, "req-7")
    finally:
        client.close()


def _requests(service: JsonService) -> list[tuple[str, str, str]]:
    return [(method, path, body["request_id"]) for method, path, body in service.seen]


@pytest.mark.parametrize(("service", "attempts"), [([503, 201], 2), ([502, 504, 201], 3)], indirect=["service"])
def test_a_gateway_error_is_retried_with_the_same_request_id_and_admits(service: JsonService, attempts: int) -> None:
    lease = _admit(service)
    assert (lease.id, lease.request_id, lease.gpus_total) == ("lease-1", "req-7", 2)
    assert _requests(service) == [("POST", f"{PREFIX}api/v1/leases", "req-7")] * attempts


@pytest.mark.parametrize("service", [[503]], indirect=True)
def test_a_service_that_keeps_answering_503_refuses_the_submission_after_the_retries(service: JsonService) -> None:
    with pytest.raises(QuotaUnavailable, match=r"answered 503 database is locked\. Submissions are refused.*running work is not affected"):
        _admit(service)
    assert len(service.seen) == 3  # the first try and two retries, then it gives up


@pytest.mark.parametrize("service", [[500]], indirect=True)
def test_a_500_is_not_retried(service: JsonService) -> None:
    with pytest.raises(QuotaUnavailable, match="answered 500 database is locked"):
        _admit(service)
    assert len(service.seen) == 1  # only gateway errors (502, 503, 504) mean "try again"


@pytest.mark.parametrize("service", [["sleep"]], indirect=True)
def test_a_service_that_answers_too_late_refuses_the_submission(service: JsonService) -> None:
    with pytest.raises(QuotaUnavailable, match=r"cannot be reached \(ReadTimeout.*Try again shortly"):
        _admit(service)
    assert [request_id for *_, request_id in _requests(service)] == ["req-7"] * 3  # the service may replay each retry


@pytest.mark.parametrize("service", [["sleep", 201]], indirect=True)
def test_a_late_answer_then_a_quick_one_admits_once(service: JsonService) -> None:
    lease = _admit(service)
    assert lease.request_id == "req-7" and len(service.seen) == 2
