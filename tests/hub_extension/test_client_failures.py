"""QuotaClient when the quota service fails during admission: a real HTTP server on 127.0.0.1 that
answers 5xx or answers too late. Each case shows what the service saw, so the retries and their
request id (what makes a retried admission safe) are checked, not only the final error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hub_extension import SERVICE_HEADER
from hub_extension.client import QuotaClient
from workflow_compiler.errors import QuotaUnavailable

LEASE = {"id": "lease-1", "expires_at": "2030-01-01T00:00:00", "gpus_total": 2, "pool": "default",
         "ttl_seconds": 60.0, "status": "active"}


class FailingService(ThreadingHTTPServer):
    """Answers each POST with the next of ``replies``: an HTTP status, or ``"sleep"`` (answers after 3 s)."""

    daemon_threads = True

    def __init__(self, replies: list[int | str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies = replies
        self.seen: list[dict[str, Any]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A late answer meets a client that gave up (broken pipe): expected here, not an error to print."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/nbscale-quotas/"


class _Handler(BaseHTTPRequestHandler):
    server: FailingService

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append({"path": self.path, **body})
        reply = self.server.replies[min(len(self.server.seen), len(self.server.replies)) - 1]
        if reply == "sleep":
            time.sleep(3)
            reply = 201
        answer = ({"admitted": True, "lease": {**LEASE, "request_id": body["request_id"]}} if reply == 201
                  else {"message": "database is locked"})
        data = json.dumps(answer).encode()
        self.send_response(int(reply))
        self.send_header(SERVICE_HEADER, "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass


@pytest.fixture
def service(request: pytest.FixtureRequest) -> Iterator[FailingService]:
    server = FailingService(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _admit(service: FailingService) -> Any:
    client = QuotaClient(service.url, "token", timeout=0.5, retries=2)
    try:
        return client.admit(2, "default", 1, 60, "req-7")
    finally:
        client.close()


@pytest.mark.parametrize(("service", "attempts"), [([503, 201], 2), ([502, 504, 201], 3)], indirect=["service"])
def test_a_gateway_error_is_retried_with_the_same_request_id_and_admits(service: FailingService, attempts: int) -> None:
    lease = _admit(service)
    assert (lease.id, lease.request_id, lease.gpus_total) == ("lease-1", "req-7", 2)
    assert [(s["path"], s["request_id"]) for s in service.seen] == [("/services/nbscale-quotas/api/v1/leases", "req-7")] * attempts


@pytest.mark.parametrize("service", [[503]], indirect=True)
def test_a_service_that_keeps_answering_503_refuses_the_submission_after_the_retries(service: FailingService) -> None:
    with pytest.raises(QuotaUnavailable, match=r"answered 503 database is locked\. Submissions are refused.*running work is not affected"):
        _admit(service)
    assert len(service.seen) == 3  # the first try and two retries, then it gives up


@pytest.mark.parametrize("service", [[500]], indirect=True)
def test_a_500_is_not_retried(service: FailingService) -> None:
    with pytest.raises(QuotaUnavailable, match="answered 500 database is locked"):
        _admit(service)
    assert len(service.seen) == 1  # only gateway errors (502, 503, 504) mean "try again"


@pytest.mark.parametrize("service", [["sleep"]], indirect=True)
def test_a_service_that_answers_too_late_refuses_the_submission(service: FailingService) -> None:
    with pytest.raises(QuotaUnavailable, match=r"cannot be reached \(ReadTimeout.*Try again shortly"):
        _admit(service)
    assert [s["request_id"] for s in service.seen] == ["req-7"] * 3  # each retry may be replayed by the service


@pytest.mark.parametrize("service", [["sleep", 201]], indirect=True)
def test_a_late_answer_then_a_quick_one_admits_once(service: FailingService) -> None:
    lease = _admit(service)
    assert lease.request_id == "req-7" and len(service.seen) == 2
