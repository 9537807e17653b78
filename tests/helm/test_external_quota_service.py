"""The quota service as z2jh and the chart deploy it, against a real JupyterHub on 127.0.0.1.

The service is started on its own, with the command, flags and environment of the chart's
Deployment (the Secret's token and the pod's mounts mapped onto this machine); the hub registers it
by URL only, with the service entry, roles and scopes of examples/z2jh-values.yaml, as z2jh would.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hub_extension import SERVICE_HEADER, SERVICE_NAME
from hub_extension.devhub import LocalHub, free_port
from tests.helm.chart import container_of, local_command, manifests
from tests.helm.z2jh_values import hub_config_from_values, load_example

pytestmark = pytest.mark.slow


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the quota service exited with {process.returncode}"
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            time.sleep(0.25)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def external_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalHub, dict[str, Any]]]:
    workdir = tmp_path_factory.mktemp("external-quotas")
    token, port = secrets.token_hex(32), free_port()
    hub = LocalHub(workdir / "hub")  # its ports are chosen now: the chart is rendered with them
    values = {"quotas": {"port": port, "hub": {"apiUrl": f"http://127.0.0.1:{hub.hub_port}/hub/api"}}}
    container, pod = container_of(manifests(values), "nbscale-quotas")
    secrets_here = {("hub", f"hub.services.{SERVICE_NAME}.apiToken"): token}
    command, env = local_command(container, pod, secrets=secrets_here, workdir=workdir / "pod")
    log = (workdir / "service.log").open("ab")
    service = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        live = container["livenessProbe"]["httpGet"]["path"]
        assert _wait_for(f"http://127.0.0.1:{port}{live}", service).status_code == 200
        hub.services_config = hub_config_from_values(load_example(), service_url=f"http://127.0.0.1:{port}", api_token=token)
        hub.start()
        try:
            yield hub, container
        finally:
            hub.stop()
    finally:
        service.terminate()
        service.wait(timeout=30)
        log.close()


def test_a_user_with_the_role_gets_a_quota_answer(external_hub: tuple[LocalHub, dict[str, Any]]) -> None:
    hub, _ = external_hub
    token = hub.token_for("alice", groups=["gpu-users"])
    answer = httpx.get(hub.service_url + "api/v1/me", headers={"Authorization": f"token {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers[SERVICE_HEADER] == "1"
    assert answer.json()["user"] == "alice"


def test_a_user_without_the_role_is_refused(external_hub: tuple[LocalHub, dict[str, Any]]) -> None:
    hub, _ = external_hub
    token = hub.token_for("mallory", groups=[])
    answer = httpx.get(hub.service_url + "api/v1/me", headers={"Authorization": f"token {token}"}, timeout=30)
    assert answer.status_code == 403, answer.text
    assert answer.headers[SERVICE_HEADER] == "1"


def test_the_probes_of_the_deployment_answer(external_hub: tuple[LocalHub, dict[str, Any]]) -> None:
    hub, container = external_hub
    port = container["ports"][0]["containerPort"]
    for probe in ("readinessProbe", "livenessProbe"):
        answer = httpx.get(f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}", timeout=10)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
