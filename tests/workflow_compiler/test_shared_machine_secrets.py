"""No credential of a tracking URI in records, logs, outputs or the CLI's output (issue 18, item 3).

The URI points at a closed port on 127.0.0.1, so the run fails at once, with MLflow's own error
about that URI; then every file the run left under NBSCALE_HOME, and what the CLI printed, are
searched for the secret.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_compiler.redaction import print_redacted_exception, redact
from workflow_compiler.tracking_uri import credentials_out_of_uri

NBSCALE = str(Path(sys.executable).parent / "nbscale")
HERE = Path(__file__).parent
SECRET = "Pw-S3cret-7f3a"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns: connections are refused


@pytest.mark.slow
@pytest.mark.parametrize("userinfo", [f"nbs-user:{SECRET}", f"nbs-user:{SECRET}%2F%40x", f"{SECRET}-token"],
                         ids=["user-password", "quoted-password", "token-as-user"])
@pytest.mark.parametrize("command", [
    ["run", "echo.ipynb", "-p", "count=1"],
    ["sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0)", "--search", "grid", "--metric", "score", "--mode", "max", "--concurrency", "1"],
], ids=["run", "sweep"])
def test_a_tracking_uris_credentials_reach_no_file_and_no_output(tmp_path: Path, userinfo: str, command: list[str]) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    shutil.copy(HERE / "notebooks" / "echo.ipynb", work)
    shutil.copy(HERE / "sweep_notebooks" / "objective.ipynb", work)
    port = _closed_port()
    env = {**os.environ, "NBSCALE_HOME": str(home), "MLFLOW_TRACKING_URI": f"http://{userinfo}@127.0.0.1:{port}/",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "COLUMNS": "300", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([NBSCALE, *command], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"127.0.0.1:{port}" in done.stdout + done.stderr  # the error still names the server
    leaks = [name for name, text in (("stdout", done.stdout), ("stderr", done.stderr)) if SECRET in text]
    written = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
    leaks += [str(p.relative_to(home)) for p in written if SECRET.encode() in p.read_bytes()]
    assert leaks == []
    if command[0] == "run":  # the run got far enough to leave its record, log, result and notebook
        assert {"runs.db", "log.txt", "result.json", "output.ipynb"} <= {p.name for p in written}


@pytest.mark.parametrize(("text", "expected"), [
    ("store 'http://u:pw@h:5000/x' failed", "store 'http://***@h:5000/x' failed"),
    ("https://tok@h/a and s3://key:secret@bucket/k", "https://***@h/a and s3://***@bucket/k"),
    ("GET /api?token=abc123&run=1", "GET /api?token=***&run=1"),
    ("url?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/x", "url?X-Amz-Signature=***&X-Amz-Credential=***"),
    ("Authorization: Bearer abcdefghij", "Authorization: Bearer ***"),
    ("MLFLOW_TRACKING_PASSWORD=hunter22 set", "MLFLOW_TRACKING_PASSWORD=*** set"),
    ("no secret in sqlite:////home/u/.nbscale/mlflow.db", "no secret in sqlite:////home/u/.nbscale/mlflow.db"),
    ("mail me@example.org about token expiry", "mail me@example.org about token expiry"),
], ids=["userinfo", "token-user-and-s3", "query-token", "presigned", "bearer", "variable", "plain-path", "prose"])
def test_redact_removes_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_removes_the_values_of_this_processs_credential_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p@ss-w0rd-value")
    assert redact("connect as p@ss-w0rd-value failed") == "connect as *** failed"


@pytest.mark.parametrize(("env", "expected"), [
    ({"MLFLOW_TRACKING_URI": "https://u%40x:p%2Fw@h:5000/p?q=1"},
     {"MLFLOW_TRACKING_URI": "https://h:5000/p?q=1", "MLFLOW_TRACKING_USERNAME": "u@x", "MLFLOW_TRACKING_PASSWORD": "p/w"}),
    ({"MLFLOW_TRACKING_URI": "https://u:p@h", "MLFLOW_TRACKING_USERNAME": "a", "MLFLOW_TRACKING_PASSWORD": "b"},
     {"MLFLOW_TRACKING_URI": "https://h", "MLFLOW_TRACKING_USERNAME": "a", "MLFLOW_TRACKING_PASSWORD": "b"}),
    ({"MLFLOW_TRACKING_URI": "https://token@h"}, {"MLFLOW_TRACKING_URI": "https://token@h"}),
    ({"MLFLOW_TRACKING_URI": "sqlite:////tmp/m.db"}, {"MLFLOW_TRACKING_URI": "sqlite:////tmp/m.db"}),
    ({}, {}),
], ids=["moved", "variables-already-set", "user-only", "sqlite", "unset"])
def test_a_uris_password_moves_into_mlflows_credential_variables(env: dict[str, str], expected: dict[str, str]) -> None:
    assert credentials_out_of_uri(env) == expected


def test_an_uncaught_traceback_is_printed_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError(f"API request to http://nbs-user:{SECRET}@127.0.0.1:9/api failed")
    except RuntimeError as exc:
        print_redacted_exception(type(exc), exc, exc.__traceback__)
    printed = capsys.readouterr().err
    assert "Traceback" in printed and "http://***@127.0.0.1:9/api" in printed and SECRET not in printed
