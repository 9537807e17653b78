"""One run list per home: the server extension reads and writes ``$NBSCALE_HOME/runs.db``, as the CLI
and the magics do, and imports its former store under the Jupyter data dir once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.store import RunRecord, RunStore

FORMER_ID, CLI_ID = "nbs-00000000f1", "nbs-00000000c1"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh NBSCALE_HOME for this test's server."""
    home = tmp_path / "home"
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    return home


@pytest.fixture
def former_store(jp_data_dir: Path) -> Path:
    """The extension's former run store under the Jupyter data dir, holding one run started from Lab."""
    path = jp_data_dir / "nbscale" / "runs.db"
    RunStore(path).create(RunRecord(id=FORMER_ID, notebook="quick.ipynb", status="SUCCEEDED"))
    return path


@pytest.fixture
def jp_server_config(notebook_root: Path, home: Path, former_store: Path) -> dict[str, Any]:
    """The extension with its default store: no run_store_path."""
    RunStore().create(RunRecord(id=CLI_ID, kind="sweep", notebook="train.ipynb", status="SUCCEEDED"))  # as `nbscale sweep` records
    return {"ServerApp": {"jpserver_extensions": {"notebook_plugin": True}}}


async def test_lab_sees_cli_runs_and_the_former_store_is_imported_once(api: Any, home: Path, former_store: Path) -> None:
    status, listing = await api("GET", "runs")
    assert status == 200, listing
    assert {r["id"]: r["kind"] for r in listing["runs"]} == {FORMER_ID: "run", CLI_ID: "sweep"}
    assert not former_store.exists() and former_store.with_name("runs.db.imported").is_file()
    # and the CLI's store now has the run started from Lab
    assert RunStore(home / "runs.db").get(FORMER_ID).status == "SUCCEEDED"
