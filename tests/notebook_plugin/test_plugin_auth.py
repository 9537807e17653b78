"""Every nbscale endpoint asks the authorizer, and state-changing requests need the XSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nbplugin_helpers import DenyAllAuthorizer
from tornado.httpclient import AsyncHTTPClient

from notebook_plugin.handlers import AUTH_RESOURCE, ROUTES

ENDPOINTS = [
    ("GET", "notebooks/parameters?path=quick.ipynb"),
    ("GET", "schema"),
    ("GET", "runs"),
    ("POST", "runs"),
    ("GET", "runs/nbs-0000000000"),
    ("POST", "runs/nbs-0000000000/cancel"),
    ("GET", "runs/nbs-0000000000/logs"),
    ("GET", "runs/nbs-0000000000/outputs/output.ipynb"),
    ("GET", "quota"),
]


def test_every_route_is_covered_and_names_its_resource() -> None:
    """The table above reaches every registered route, and each handler declares auth_resource."""
    assert len({path.split("?")[0].replace("nbs-0000000000", "ID") for _, path in ENDPOINTS}) == len(ROUTES)
    assert all(handler.auth_resource == AUTH_RESOURCE for _, handler in ROUTES)


class TestDenyAll:
    @pytest.fixture
    def jp_server_config(self, notebook_root: Path, tmp_path: Path) -> dict[str, Any]:
        return {
            "ServerApp": {"jpserver_extensions": {"notebook_plugin": True}, "authorizer_class": DenyAllAuthorizer},
            "NbscaleExtension": {"run_store_path": str(tmp_path / "runs.db")},
        }

    @pytest.mark.parametrize(("method", "path"), ENDPOINTS)
    async def test_denied(self, jp_fetch: Any, method: str, path: str) -> None:
        route, _, query = path.partition("?")
        params = dict(p.split("=") for p in query.split("&")) if query else None
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "params": params}
        if method == "POST":
            kwargs["body"] = '{"notebook": "quick.ipynb"}'
        response = await jp_fetch("nbscale", "api", *route.split("/"), **kwargs)
        assert response.code == 403, response.body


@pytest.fixture
def listening(jp_fetch: Any) -> None:
    """jp_fetch's fixtures start the HTTP server these raw-client tests talk to."""


async def _cookie_session(jp_serverapp: Any, port: int, base_url: str) -> tuple[str, str]:
    """Log in the way a browser does (token once in the URL), keep only the login cookie."""
    base = f"http://127.0.0.1:{port}{base_url}nbscale/api/"
    token = jp_serverapp.identity_provider.token
    response = await AsyncHTTPClient().fetch(f"{base}schema?token={token}")
    cookies = "; ".join(c.split(";")[0] for c in response.headers.get_list("Set-Cookie"))
    assert cookies, "the server set no login cookie"
    return base, cookies


@pytest.mark.parametrize("path", ["runs", "runs/nbs-0000000000/cancel"])
@pytest.mark.usefixtures("listening")
async def test_post_without_xsrf_is_refused(jp_serverapp: Any, jp_http_port: int, jp_base_url: str, path: str) -> None:
    base, cookies = await _cookie_session(jp_serverapp, jp_http_port, jp_base_url)
    client = AsyncHTTPClient()
    bare = await client.fetch(base + path, method="POST", body='{"notebook": "quick.ipynb"}',
                              headers={"Cookie": cookies}, raise_error=False)
    assert bare.code == 403
    assert b"_xsrf" in bare.body
    # The same request with the double-submitted token gets past the check (and is then judged on content).
    checked = await client.fetch(base + path, method="POST", body='{"notebook": "quick.ipynb", "retries": -1}',
                                 headers={"Cookie": f"{cookies}; _xsrf=c0ffee", "X-XSRFToken": "c0ffee"}, raise_error=False)
    assert checked.code in (400, 404), checked.body


@pytest.mark.usefixtures("listening")
async def test_get_with_cookie_needs_no_xsrf(jp_serverapp: Any, jp_http_port: int, jp_base_url: str) -> None:
    base, cookies = await _cookie_session(jp_serverapp, jp_http_port, jp_base_url)
    response = await AsyncHTTPClient().fetch(base + "runs", headers={"Cookie": cookies})
    assert response.code == 200


@pytest.mark.usefixtures("listening")
async def test_no_credentials_is_refused(jp_http_port: int, jp_base_url: str, jp_serverapp: Any) -> None:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{jp_http_port}{jp_base_url}nbscale/api/runs", raise_error=False)
    assert response.code == 403
