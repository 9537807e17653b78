"""The results table the magics display (``records_html``)."""

from __future__ import annotations

import socket

import pytest

from notebook_plugin.handle import records_html


def _record(run_id: str, mlflow: str) -> dict[str, object]:
    return {"id": run_id, "kind": "run", "notebook": "walk.ipynb", "status": "SUCCEEDED",
            "progress": {"done": 4, "total": 4, "unit": "cells"}, "duration": 3.0, "metrics": {"score": 1.0},
            "links": {"mlflow": mlflow}}


def test_how_to_start_the_mlflow_ui_is_said_once_under_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("NBSCALE_MLFLOW_UI", f"http://127.0.0.1:{port}")
    records = [_record(f"nbs-000000000{i}", f"http://127.0.0.1:{port}/#/experiments/1/runs/r{i}") for i in range(3)]
    page = records_html(records)
    assert page.count("MLflow UI not running") == 1
    assert page.index("MLflow UI not running") > page.index("</table>")


def test_no_hint_when_no_run_has_an_mlflow_link() -> None:
    assert "MLflow UI not running" not in records_html([{**_record("nbs-0000000001", ""), "links": {}}])


@pytest.mark.parametrize(
    ("link", "local_files", "shown"),
    [
        ("/tmp/home/runs/nbs-0000000001/steps/notebook/outputs/output.html", True,
         "HTML: <code>/tmp/home/runs/nbs-0000000001/steps/notebook/outputs/output.html</code>"),
        ("/user/me/nbscale/api/runs/nbs-0000000001/outputs/output.html", False,
         '<a href="/user/me/nbscale/api/runs/nbs-0000000001/outputs/output.html" target="_blank">HTML</a>'),
    ],
)
def test_output_links_are_paths_to_copy_or_server_links(link: str, local_files: bool, shown: str) -> None:
    """A local path as a link would send the browser to the Jupyter server's own /tmp/..., which does not exist."""
    record = {**_record("nbs-0000000001", ""), "links": {"html": link}}
    assert shown in records_html([record], local_files=local_files)
