"""The quota service's cookies and headers, through a real hub login and OAuth round trip."""

from __future__ import annotations

import re

import httpx

from hub_extension import SERVICE_NAME
from hub_extension.devhub import USERS_GROUP, LocalHub


def _set_cookies(response: httpx.Response) -> list[tuple[str, str]]:
    """Each Set-Cookie header of an answer as (cookie name, the whole header with its attributes)."""
    return [(header.split("=", 1)[0], header) for header in response.headers.get_list("set-cookie")]


def _login(client: httpx.Client, hub: LocalHub, user: str) -> None:
    page = client.get(f"{hub.url}/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
    form = {"username": user, "password": "any", **({"_xsrf": xsrf.group(1)} if xsrf else {})}
    answer = client.post(f"{hub.url}/hub/login", data=form)
    assert answer.status_code == 302, answer.text[-2000:]


def test_the_oauth_round_trip_sets_lax_cookies_and_pages_say_nosniff(quota_hub: LocalHub, unique_user) -> None:
    user = unique_user("cookies")
    quota_hub.ensure_user(user, [USERS_GROUP])  # the group whose role reaches the service
    seen: list[tuple[str, str]] = []
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        _login(client, quota_hub, user)
        url = quota_hub.service_url
        for _ in range(10):  # the service → the hub's authorize → the service's oauth_callback → the page
            answer = client.get(url)
            if url.startswith(quota_hub.service_url):
                seen.extend(_set_cookies(answer))
            if answer.status_code not in (301, 302, 303):
                break
            url = str(answer.url.join(answer.headers["location"]))
        assert answer.status_code == 200 and answer.url.path == f"/services/{SERVICE_NAME}/", answer.text[-2000:]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Type"].startswith("text/html")
    set_values = {name: header for name, header in seen if not header.startswith(f'{name}="";')}  # not the clearing ones
    for name in (f"service-{SERVICE_NAME}", f"service-{SERVICE_NAME}-oauth-state", "_xsrf"):
        assert name in set_values, seen
        assert "; samesite=lax" in set_values[name].lower(), set_values[name]

def test_api_answers_say_nosniff(quota_hub: LocalHub) -> None:
    answer = httpx.get(quota_hub.service_url + "api/v1/me", timeout=10)
    assert answer.status_code == 403
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
