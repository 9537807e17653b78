"""Scopes, identity and request hygiene of the quota REST API, against a real hub and proxy."""

from __future__ import annotations

import re

import httpx
import pytest

from hub_extension import ADMIN_SCOPE, SERVICE_NAME, USE_SCOPE
from hub_extension.devhub import LocalHub


def browser_session(hub: LocalHub, username: str) -> httpx.Client:
    """Log in to the hub like a browser (DummyAuthenticator) and complete the service's OAuth flow."""
    client = httpx.Client(follow_redirects=True, timeout=30)
    login = client.get(f"{hub.url}/hub/login")
    xsrf = re.search(r'name="_xsrf"\s+value="([^"]+)"', login.text)
    form = {"username": username, "password": "any", **({"_xsrf": xsrf.group(1)} if xsrf else {})}
    client.post(f"{hub.url}/hub/login", params={"next": "/hub/home"}, data=form)  # no spawn
    page = client.get(hub.service_url)
    assert page.status_code == 200 and str(page.url).startswith(hub.service_url), (page.status_code, page.url)
    return client


def test_a_user_without_the_use_scope_is_refused(quota_hub, api, unique_user) -> None:
    outsider = api(quota_hub.token_for(unique_user("outsider"), groups=[]))  # not in gpu-users: no role
    answer = outsider.admit()
    assert answer.status_code == 403
    assert "access" in answer.json()["message"] or USE_SCOPE in answer.json()["message"]


def test_a_token_with_access_but_no_use_scope_cannot_admit(quota_hub, api, unique_user) -> None:
    name = unique_user("nouse")
    token = quota_hub.token_for(name, scopes=[f"access:services!service={SERVICE_NAME}"])
    answer = api(token).admit()
    assert answer.status_code == 403 and USE_SCOPE in answer.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "usage", None), ("GET", "policies", None), ("GET", "ledger", None),
     ("GET", "users/quota-admin", None), ("PUT", "policies/default/*", {"max_gpus": 0}),
     ("PUT", "policies/user/SELF", {"max_gpus": 100}), ("DELETE", "policies/group/gpu-users", None)],
)
def test_admin_endpoints_need_the_admin_scope(quota_hub, api, unique_user, method, path, body) -> None:
    name = unique_user("plain")
    plain = api(quota_hub.token_for(name))
    answer = plain.request(method, path.replace("SELF", name), json=body)
    assert answer.status_code == 403, answer.text
    assert ADMIN_SCOPE in answer.json()["message"]


def test_a_user_cannot_read_or_release_another_users_lease(quota_hub, api, admin_api, unique_user) -> None:
    alice, bob = unique_user("alice"), unique_user("bob")
    alice_api, bob_api = api(quota_hub.token_for(alice)), api(quota_hub.token_for(bob))
    lease = bob_api.admit().json()["lease"]
    assert alice_api.get(f"users/{bob}").status_code == 403
    for verb in ("release", "heartbeat"):
        answer = alice_api.post(f"leases/{lease['id']}/{verb}", json={})
        assert answer.status_code == 404 and "no lease" in answer.json()["message"]
    assert bob_api.get("me").json()["usage"]["gpus_in_use"] == 1  # still held
    assert admin_api.get(f"users/{bob}").json()["usage"]["gpus_in_use"] == 1


def test_identity_cannot_be_spoofed_through_the_body_or_headers(quota_hub, api, unique_user) -> None:
    mallory, victim = unique_user("mallory"), unique_user("victim")
    quota_hub.ensure_user(victim, ["gpu-users"])
    client = api(quota_hub.token_for(mallory))
    answer = client.admit(user=victim)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["loc"] == ["user"]
    answer = client.post("leases", headers={"X-Forwarded-User": victim, "X-Remote-User": victim},
                         json={"gpus": 1, "estimated_seconds": 5, "request_id": "spoof"})
    assert answer.status_code == 201 and answer.json()["lease"]["user"] == mallory


def test_a_service_token_is_not_a_user(quota_hub) -> None:
    # the devhub admin service may call the hub but holds no access to the quota service
    answer = httpx.post(quota_hub.service_url + "api/v1/leases", json={"gpus": 1, "estimated_seconds": 5, "request_id": "svc"},
                        headers={"Authorization": f"token {quota_hub.service_token()}"})
    assert answer.status_code == 403


def test_tokens_in_urls_are_refused(quota_hub, unique_user) -> None:
    token = quota_hub.token_for(unique_user("urltoken"))
    answer = httpx.get(quota_hub.service_url + "api/v1/me", params={"token": token})
    assert answer.status_code == 403 and "URL" in answer.json()["message"]
    page = httpx.get(quota_hub.service_url, params={"token": token})
    assert page.status_code == 403 and "Tokens in URLs are refused" in page.text


def test_cookie_authenticated_writes_need_the_xsrf_token(quota_hub, admin_api, unique_user) -> None:
    target = unique_user("xsrf")
    session = browser_session(quota_hub, "quota-admin")
    page = session.get(quota_hub.service_url)
    token = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    form = {"kind": "user", "name": target, "max_gpus": "2"}
    forged = session.post(quota_hub.service_url + "policies", data=form, follow_redirects=False)
    assert forged.status_code == 403
    assert admin_api.get("policies").json()["policies"] == [p for p in admin_api.get("policies").json()["policies"] if p["name"] != target]
    real = session.post(quota_hub.service_url + "policies", data={**form, "_xsrf": token}, follow_redirects=False)
    assert real.status_code == 302, real.text
    policy = [p for p in admin_api.get("policies").json()["policies"] if p["name"] == target]
    assert policy and policy[0]["max_gpus"] == 2 and policy[0]["updated_by"] == "quota-admin"
    session.close()


@pytest.mark.parametrize(
    ("body", "loc"),
    [({"gpus": -1, "estimated_seconds": 5, "request_id": "x"}, ["gpus"]),
     ({"gpus": 1, "estimated_seconds": 5, "request_id": "x", "pool": "A100; rm -rf"}, ["pool"]),
     ({"gpus": 1, "estimated_seconds": 5, "request_id": "../../etc"}, ["request_id"]),
     ({"gpus": 1, "request_id": "x"}, ["estimated_seconds"])],
)
def test_bad_admission_requests_get_400_with_the_field(quota_hub, api, unique_user, body, loc) -> None:
    answer = api(quota_hub.token_for(unique_user("bad"))).post("leases", json=body)
    assert answer.status_code == 400 and answer.json()["errors"][0]["loc"] == loc


def test_not_json_is_a_clear_400(quota_hub, api, unique_user) -> None:
    answer = api(quota_hub.token_for(unique_user("nojson"))).post("leases", content=b"{nope")
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["message"]


def test_admins_see_limits_from_hub_groups_of_users_who_never_ran(quota_hub, admin_api, unique_user) -> None:
    name, group = unique_user("idle"), unique_user("team")
    quota_hub.ensure_user(name, ["gpu-users", group])
    assert admin_api.put(f"policies/group/{group}", json={"max_gpus": 6}).status_code == 200
    quota = admin_api.get(f"users/{name}").json()
    assert quota["limits"]["max_gpus"] == 6 and quota["limits"]["sources"]["max_gpus"] == f"group:{group}"
    missing = admin_api.get(f"users/{unique_user('nobody')}")
    assert missing.status_code == 404 and "no user" in missing.json()["message"]


@pytest.mark.parametrize(("setting", "served"), [(None, False), ("0", False), ("1", True)])
def test_the_benchmark_endpoints_are_served_only_when_asked(monkeypatch, setting, served) -> None:
    from hub_extension.handlers.api import api_routes
    from hub_extension.handlers.benchmark import BENCHMARK_ENV

    if setting is None:
        monkeypatch.delenv(BENCHMARK_ENV, raising=False)
    else:
        monkeypatch.setenv(BENCHMARK_ENV, setting)
    urls = [url for url, _, _ in api_routes("/services/nbscale-quotas/")]
    for endpoint in ("noop", "timings"):
        assert (f"/services/nbscale-quotas/api/v1/benchmark/{endpoint}" in urls) is served
