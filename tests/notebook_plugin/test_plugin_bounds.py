"""The REST API's bounds: hostile sizes and numbers are 4xx with a message, the root stays private,
run outputs carry their own content type, and the run list stays light."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.limits import MAX_BODY_BYTES, MAX_PARAMETERS, MAX_VALUE_BYTES, MAX_VALUE_DEPTH
from workflow_compiler.store import RunRecord, RunStore

RUN_ID = "nbs-00000000aa"


@pytest.fixture
def finished_run(tmp_path: Path) -> RunRecord:
    """A SUCCEEDED run in the server's store, with an HTML and a notebook output in its folder."""
    run_dir = tmp_path / "runs" / RUN_ID
    (run_dir / "outputs").mkdir(parents=True)
    html = run_dir / "outputs" / "output.html"
    html.write_text("<!DOCTYPE html><html><body><h1>hello</h1><script>document.title='ran'</script></body></html>")
    ipynb = run_dir / "outputs" / "output.ipynb"
    ipynb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    record = RunRecord(id=RUN_ID, notebook="quick.ipynb", status="SUCCEEDED", run_dir=str(run_dir),
                       started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:00:01+00:00",
                       parameters={"greeting": "x" * 10_000}, links={"html": str(html), "output_notebook": str(ipynb)})
    return RunStore(tmp_path / "runs.db").create(record)


@pytest.mark.parametrize(
    ("name", "content_type", "csp"),
    [
        ("output.html", "text/html", "sandbox; frame-ancestors 'self'"),
        ("output.ipynb", "application/x-ipynb+json", None),
    ],
)
async def test_outputs_are_served_with_their_own_content_type(jp_fetch: Any, finished_run: RunRecord, name: str,
                                                              content_type: str, csp: str | None) -> None:
    response = await jp_fetch("nbscale", "api", "runs", RUN_ID, "outputs", name)
    assert response.code == 200
    assert response.headers["Content-Type"].split(";")[0] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if csp:
        assert response.headers["Content-Security-Policy"] == csp  # no allow-scripts: the notebook's script never runs
    assert response.headers["Content-Disposition"].startswith("inline")


async def test_the_run_list_leaves_out_parameter_values(api: Any, finished_run: RunRecord) -> None:
    status, listing = await api("GET", "runs")
    assert status == 200 and [r["id"] for r in listing["runs"]] == [RUN_ID]
    assert "parameters" not in listing["runs"][0]
    assert len(json.dumps(listing)) < 5_000
    status, one = await api("GET", f"runs/{RUN_ID}")
    assert status == 200 and one["parameters"]["greeting"] == "x" * 10_000


async def test_a_page_past_the_end_is_empty(api: Any, finished_run: RunRecord) -> None:
    status, listing = await api("GET", "runs", params={"page": "1000000000", "per_page": "200"})
    assert status == 200 and listing["runs"] == [] and listing["total"] == 1


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("runs", {"page": "99999999999999999999"}, "page"),
        (f"runs/{RUN_ID}/logs", {"offset": "9223372036854775807"}, "offset"),
        (f"runs/{RUN_ID}/logs", {"offset": "-1"}, "offset"),
    ],
)
async def test_huge_numbers_in_queries_are_400(api: Any, finished_run: RunRecord, path: str, params: dict[str, str], loc: str) -> None:
    status, answer = await api("GET", path, params=params)
    assert status == 400, answer
    assert answer["errors"][0]["loc"] == [loc] and answer["message"]


async def test_a_log_offset_past_the_end_reads_nothing(api: Any, finished_run: RunRecord) -> None:
    Path(finished_run.run_dir, "log.txt").write_text("done\n")
    status, answer = await api("GET", f"runs/{RUN_ID}/logs", params={"offset": str(2**53 - 1)})
    assert status == 200, answer
    assert answer["text"] == "" and answer["done"] is True


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ('{"notebook": "quick.ipynb", "parameters": {"greeting": ' + "[" * 100_000 + "]" * 100_000 + "}}", 400, "too deeply"),
        ({"notebook": "quick.ipynb", "parameters": {"greeting": _nested(MAX_VALUE_DEPTH + 1)}}, 400, f"{MAX_VALUE_DEPTH} deep"),
        ({"notebook": "quick.ipynb", "parameters": {"greeting": "x" * (MAX_VALUE_BYTES + 1)}}, 400, "limit per value"),
        ({"notebook": "quick.ipynb", "parameters": {f"p{i}": 1 for i in range(100_000)}}, 413, "KiB"),
        ({"notebook": "quick.ipynb", "parameters": {f"p{i}": 1 for i in range(MAX_PARAMETERS + 1)}}, 400,
         f"the {MAX_PARAMETERS} a notebook may receive"),
        ({"notebook": "quick.ipynb", "parameters": {"greeting": "x" * (MAX_BODY_BYTES + 1)}}, 413, "the limit is"),
    ],
)
async def test_oversized_or_overnested_specs_are_refused_with_a_message(api: Any, notebook_root: Path, body: Any, status: int,
                                                                       words: str) -> None:
    got, answer = await api("POST", "runs", body=body)
    assert got == status, answer
    assert words in answer["message"]
    assert str(notebook_root) not in answer["message"]


async def test_an_unknown_parameter_names_the_notebook_relative_to_the_root(api: Any, notebook_root: Path) -> None:
    status, answer = await api("POST", "runs", body={"notebook": "quick.ipynb", "parameters": {"nope": 1}})
    assert status == 400, answer
    assert answer["message"].startswith("unknown parameter 'nope' for quick.ipynb.")
    assert str(notebook_root) not in json.dumps(answer)


async def test_a_link_out_of_the_root_is_refused_in_plain_words(api: Any, notebook_root: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "elsewhere.ipynb"
    outside.write_text((notebook_root / "quick.ipynb").read_text())
    os.symlink(outside, notebook_root / "link.ipynb")
    status, answer = await api("POST", "runs", body={"notebook": "link.ipynb"})
    assert status == 403, answer
    assert answer["message"] == ("link.ipynb is outside the folder this Jupyter server serves (it leads there through a "
                                 "symbolic link). Move or copy the notebook into it.")
