"""A tracking server that does not answer: an nbscale error in seconds naming the host, never MLflow's minutes of retries."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.errors import TrackingUnreachable
from workflow_compiler.tracking_server import check_tracking_server, server_address

NBSCALE = str(Path(sys.executable).parent / "nbscale")
OBJECTIVE = Path(__file__).parent / "sweep_notebooks" / "objective.ipynb"
PASSWORD = "s3cret-pw"  # noqa: S105 - a test value that must never be shown


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, then closed: nothing listens there afterwards
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def answering_server() -> Iterator[str]:
    """A loopback HTTP server that answers every request 404, as a proxy in front of MLflow might."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("uri", "shown"), [
    ("http://user:pw@127.0.0.1:5000/mlflow?x=1", "http://127.0.0.1:5000"),
    ("https://mlflow.example.com", "https://mlflow.example.com"),
    ("http://host:notaport/", "http://host"),
])
def test_the_address_shown_has_no_credentials_or_path(uri: str, shown: str) -> None:
    assert server_address(uri) == shown


def test_a_closed_port_is_an_error_in_seconds_naming_the_host_not_the_password() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(TrackingUnreachable) as caught:
        check_tracking_server(f"http://alice:{PASSWORD}@127.0.0.1:{port}/")
    assert time.monotonic() - started < 15  # MLflow's own defaults retry for minutes
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}: the connection was refused" in caught.value.message
    assert "unset MLFLOW_TRACKING_URI" in caught.value.message and PASSWORD not in caught.value.message


def test_any_http_answer_is_a_server_there(answering_server: str) -> None:
    check_tracking_server(answering_server)  # 404 for /health: reachable; MLflow's own requests say the rest


@pytest.mark.parametrize("uri", ["sqlite:////nonexistent/mlflow.db", "file:///nonexistent/mlruns", "/nonexistent/mlruns"])
def test_a_store_that_is_not_a_server_is_not_contacted(uri: str) -> None:
    check_tracking_server(uri)


@pytest.mark.parametrize("command", [
    ["run", "objective.ipynb", "-p", "x=1.0"],
    ["sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0)", "--search", "grid", "--metric", "score", "--mode", "max", "--no-progress"],
], ids=["run", "sweep"])
def test_the_cli_fails_fast_and_records_why(tmp_path: Path, command: list[str]) -> None:
    shutil.copy(OBJECTIVE, tmp_path / "objective.ipynb")
    port = _closed_port()
    env = {**os.environ, "COLUMNS": "200", "NBSCALE_HOME": str(tmp_path / "home"), "NBSCALE_WARM_DRIVER": "0",
           "MLFLOW_TRACKING_URI": f"http://alice:{PASSWORD}@127.0.0.1:{port}/"}
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    done = subprocess.run([NBSCALE, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    said = " ".join(done.stderr.split())
    assert done.returncode == 1, done.stderr
    assert f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}: the connection was refused" in said
    assert "Retrying" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    assert took < 120, took  # a loaded 2-core machine: the point is seconds, not MLflow's minutes of back-off
    listed = subprocess.run([NBSCALE, "runs", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    (record,) = json.loads(listed.stdout)["runs"]
    assert record["status"] == "FAILED" and "cannot reach the MLflow tracking server" in record["error"]
    subprocess.run([NBSCALE, "daemons", "stop"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
