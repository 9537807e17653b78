"""The chart's MLflow server, run from the rendered Deployment's command, flags and environment.

It answers its probe, accepts its Service's host names and refuses others, and stores artifacts
that a client uploads through it (``--serve-artifacts``): step pods need no bucket credentials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub_extension.devhub import free_port
from tests.helm.chart import NAMESPACE, container_of, local_command, manifests

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    workdir, port = tmp_path_factory.mktemp("chart-mlflow"), free_port()
    values = {"mlflow": {"enabled": True, "port": port, "backendStore": {"secretName": "mlflow-db", "secretKey": "url"},
                         "extraAllowedHosts": [f"127.0.0.1:{port}"]}}
    container, pod = container_of(manifests(values), "nbscale-mlflow")
    # the run store on the artifact claim, as tests/e2e/kind does; production uses Postgres
    secrets = {("mlflow-db", "url"): "sqlite:////mlartifacts/mlflow.db"}
    command, env = local_command(container, pod, secrets=secrets, workdir=workdir / "pod")
    log = (workdir / "mlflow.log").open("ab")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, f"mlflow server exited with {server.returncode}; see {workdir / 'mlflow.log'}"
            try:
                if httpx.get(url + container["readinessProbe"]["httpGet"]["path"], timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"mlflow server not healthy after 120 s; see {workdir / 'mlflow.log'}")
        yield url, port, workdir / "pod" / "artifacts"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and the workers it started
        server.wait(timeout=30)
        log.close()


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("nbscale-mlflow:{port}", 200),
        ("nbscale-mlflow.{namespace}.svc:{port}", 200),
        ("evil.example:{port}", 403),
    ],
)
def test_the_server_answers_its_service_names_only(mlflow_server: tuple[str, int, Path], host: str, status: int) -> None:
    url, port, _ = mlflow_server
    answer = httpx.get(f"{url}/api/2.0/mlflow/experiments/search", params={"max_results": 1}, timeout=30,
                       headers={"Host": host.format(port=port, namespace=NAMESPACE)})
    assert answer.status_code == status, answer.text


def test_artifacts_are_uploaded_through_the_server(mlflow_server: tuple[str, int, Path]) -> None:
    from mlflow import MlflowClient

    url, _, artifacts = mlflow_server
    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment(f"chart-{time.time_ns()}")
    run = client.create_run(experiment)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    client.log_text(run.info.run_id, "executed notebook", "output.txt")
    stored: list[Any] = [p for p in artifacts.rglob("output.txt")]
    assert len(stored) == 1 and stored[0].read_text() == "executed notebook"
