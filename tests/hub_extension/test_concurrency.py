"""Atomic admission through the real hub, proxy and service: 50 threads against a quota of 4, many times."""

from __future__ import annotations

import threading
import uuid

import httpx

ROUNDS = 15


def test_fifty_concurrent_requests_against_quota_four_admit_exactly_four(quota_hub, set_limits, admin_api, unique_user) -> None:
    name = unique_user("race")
    token = quota_hub.token_for(name)
    set_limits(name, max_gpus=4)
    clients = [httpx.Client(base_url=quota_hub.service_url + "api/v1/", timeout=60,
                            headers={"Authorization": f"token {token}"}) for _ in range(50)]
    try:
        for round_no in range(ROUNDS):
            barrier, answers = threading.Barrier(50), [None] * 50

            def ask(i: int, barrier: threading.Barrier, answers: list) -> None:
                barrier.wait()
                answers[i] = clients[i].post("leases", json={"gpus": 1, "estimated_seconds": 60,
                                                              "request_id": uuid.uuid4().hex})

            threads = [threading.Thread(target=ask, args=(i, barrier, answers)) for i in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            codes = sorted(a.status_code for a in answers)
            assert codes == [201] * 4 + [409] * 46, f"round {round_no}: {codes}"
            for answer in answers:
                if answer.status_code == 201:
                    lease_id = answer.json()["lease"]["id"]
                    assert clients[0].post(f"leases/{lease_id}/release", json={}).status_code == 200
        events = admin_api.get("ledger", params={"user": name, "limit": 1000}).json()["entries"]
        assert sum(e["event"] == "admitted" for e in events) == 4 * ROUNDS
        assert sum(e["event"] == "refused" for e in events) == 46 * ROUNDS
    finally:
        for client in clients:
            client.close()
