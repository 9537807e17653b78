"""The example config gives a spawned single-user server a token that may use the quota service."""

from __future__ import annotations

import time

import pytest

from hub_extension import SERVICE_NAME, USE_SCOPE


@pytest.mark.slow
def test_a_spawned_servers_token_carries_the_quota_scopes(quota_hub, unique_user) -> None:
    name = unique_user("spawned")
    quota_hub.ensure_user(name, ["gpu-users"])
    quota_hub.hub_api("POST", f"users/{name}/server", ok=(201, 202))
    try:
        deadline = time.monotonic() + 90
        while not quota_hub.hub_api("GET", f"users/{name}")["servers"].get("", {}).get("ready"):
            assert time.monotonic() < deadline, quota_hub.log_tail()
            time.sleep(0.5)
        tokens = quota_hub.hub_api("GET", f"users/{name}/tokens")["api_tokens"]
        server_tokens = [t for t in tokens if "Server at" in (t.get("note") or "")]
        assert server_tokens, tokens
        scopes = set(server_tokens[-1]["scopes"])
        assert {f"access:services!service={SERVICE_NAME}", USE_SCOPE} <= scopes
    finally:
        quota_hub.hub_api("DELETE", f"users/{name}/server", ok=(202, 204))
