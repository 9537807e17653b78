"""The REST API's answers for bad input: paths outside the root, hidden paths, invalid specs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest


async def test_parameters_of_a_notebook(api: Any) -> None:
    status, body = await api("GET", "notebooks/parameters", params={"path": "train.ipynb"})
    assert status == 200
    assert body["path"] == "train.ipynb"
    by_name = {p["name"]: p for p in body["parameters"]}
    assert by_name["n_estimators"]["type"] == "int" and by_name["n_estimators"]["default"] == 100
    assert by_name["learning_rate"]["help"] == "boosting step size"


async def test_schema_carries_run_and_sweep(api: Any) -> None:
    status, body = await api("GET", "schema")
    assert status == 200
    assert "resources" in body["run"]["properties"] and "sweep" in body["run"]["properties"]
    assert "steps" in body["pipeline"]["properties"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("../train.ipynb", 403),
        ("sub/../../train.ipynb", 403),
        ("/etc/passwd", 403),
        ("~/train.ipynb", 403),
        (".hidden/secret.ipynb", 403),
        ("escape.ipynb", 403),  # a symlink pointing outside the root
        ("missing.ipynb", 404),
        ("", 400),
    ],
)
async def test_paths_outside_root_or_hidden_are_refused(api: Any, notebook_root: Path, tmp_path_factory: pytest.TempPathFactory,
                                                        path: str, status: int) -> None:
    outside = tmp_path_factory.mktemp("outside") / "elsewhere.ipynb"
    outside.write_text((notebook_root / "quick.ipynb").read_text())
    os.symlink(outside, notebook_root / "escape.ipynb")
    got, body = await api("GET", "notebooks/parameters", params={"path": path})
    assert got == status, body
    assert str(notebook_root) not in body["message"]  # no server paths in answers
    assert body["errors"] and body["errors"][0]["loc"][0] == "path", body
    if status == 403:
        got, body = await api("POST", "runs", body={"notebook": path})
        assert got == 403, body
        assert body["errors"][0]["loc"][0] == "notebook"


async def test_a_symlink_inside_the_root_is_followed(api: Any, notebook_root: Path) -> None:
    (notebook_root / "lab").mkdir()
    os.symlink(notebook_root / "quick.ipynb", notebook_root / "lab" / "alias.ipynb")
    status, body = await api("GET", "notebooks/parameters", params={"path": "lab/alias.ipynb"})
    assert status == 200
    assert body["path"] == "quick.ipynb"  # resolved to the real file


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"notebook": "train.ipynb", "parameters": {"n_estimators": "many"}}, ["parameters", "n_estimators"]),
        ({"notebook": "train.ipynb", "parameters": {"learning_rate": [1]}}, ["parameters", "learning_rate"]),
        ({"notebook": "train.ipynb", "parameters": {"nope": 1}}, ["parameters", "nope"]),
        ({"notebook": "train.ipynb", "resources": {"cpu": -1}}, ["resources", "cpu"]),
        ({"notebook": "train.ipynb", "resources": {"memory": "lots"}}, ["resources", "memory"]),
        ({"notebook": "train.ipynb", "resources": {"gpus": 1.5}}, ["resources", "gpus"]),
        ({"notebook": "train.ipynb", "surprise": True}, ["surprise"]),
        ({"notebook": "train.ipynb", "sweep": {"space": {"n_estimators": "randint(50, 400)"}}}, ["sweep", "metric"]),
        ({"notebook": "train.ipynb", "sweep": {"space": {"n_estimators": "randint(50, 400)"}, "metric": "loss"}}, ["sweep", "mode"]),
        ({"notebook": "train.ipynb", "sweep": {"space": {"n_estimators": "randint(400, 50)"}, "metric": "val_accuracy", "mode": "max"}},
         ["sweep", "space"]),
        ({"notebook": "notes.txt"}, ["notebook"]),
        ({"notebook": "missing.ipynb"}, ["notebook"]),
    ],
)
async def test_bad_specs_are_400_naming_the_field(api: Any, body: dict[str, Any], loc: list[str]) -> None:
    status, answer = await api("POST", "runs", body=body)
    assert status in (400, 404), answer
    assert (status == 404) == (body["notebook"] == "missing.ipynb")
    locs = [e["loc"][: len(loc)] for e in answer["errors"]]
    assert loc in locs, answer
    assert answer["message"]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "null"])
async def test_a_body_that_is_not_a_spec_is_400(api: Any, raw: str) -> None:
    status, answer = await api("POST", "runs", body=raw)
    assert status == 400, answer
    assert "message" in answer


@pytest.mark.parametrize(
    ("params", "loc"),
    [({"status": "DONE"}, "status"), ({"page": "0"}, "page"), ({"per_page": "1000"}, "per_page")],
)
async def test_bad_list_queries_are_400(api: Any, params: dict[str, str], loc: str) -> None:
    status, answer = await api("GET", "runs", params=params)
    assert status == 400
    assert answer["errors"][0]["loc"] == [loc]


@pytest.mark.parametrize("path", ["runs/nbs-0123456789", "runs/nbs-0123456789/logs", "runs/nbs-0123456789/outputs/output.ipynb"])
async def test_unknown_runs_are_404(api: Any, path: str) -> None:
    status, answer = await api("GET", path)
    assert status == 404
    assert "nbs-0123456789" in answer["message"]


async def test_cancel_of_an_unknown_run_is_404(api: Any) -> None:
    status, _ = await api("POST", "runs/nbs-0123456789/cancel")
    assert status == 404


async def test_quota_outside_a_hub_is_off(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_QUOTA_URL", raising=False)
    status, answer = await api("GET", "quota")
    assert status == 200
    assert answer["enabled"] is False


async def test_a_valid_sweep_runs_as_a_sweep_record_and_can_be_cancelled(api: Any) -> None:
    """A RunSpec with ``sweep`` becomes a sweep (counted in trials), never a silent single run."""
    body = {"notebook": "quick.ipynb", "sweep": {"space": {"times": "randint(1, 3)"}, "metric": "m", "mode": "max", "samples": 2}}
    status, answer = await api("POST", "runs", body=body)
    assert status == 201 and answer["kind"] == "sweep", answer
    assert answer["progress"]["unit"] == "trials" and answer["progress"]["total"] == 2
    status, cancelled = await api("POST", f"runs/{answer['id']}/cancel")
    assert status == 200 and cancelled["status"] in ("PENDING", "RUNNING", "KILLED"), cancelled  # answered while it stops
    deadline = time.monotonic() + 120
    while cancelled["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"the cancelled sweep never ended: {cancelled}"
        await asyncio.sleep(0.5)
        _, cancelled = await api("GET", f"runs/{answer['id']}")
    # two trials cannot finish before the sweep's Ray starts: anything but KILLED means the cancel was lost
    assert (cancelled["kind"], cancelled["status"]) == ("sweep", "KILLED"), cancelled


async def test_error_answers_are_json(jp_fetch: Any) -> None:
    response = await jp_fetch("nbscale", "api", "runs", method="POST", body='{"notebook": "train.ipynb", "retries": -1}',
                              raise_error=False)
    assert response.code == 400
    assert response.headers["Content-Type"].startswith("application/json")
