"""`nbscale status`, `logs` and `cancel` act through the executor that started the run (Argo's on a cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from workflow_compiler import cli
from workflow_compiler.executors import Executor, executors
from workflow_compiler.store import RunRecord, RunStore


class RemoteExecutor(Executor):
    """Stands for a cluster's executor: the run is not a local process, so only it knows the run's state."""

    name = "remote-test"
    calls: list[tuple[str, str]] = []

    def submit(self, manifest: dict[str, Any], *, record: RunRecord) -> RunRecord:
        raise NotImplementedError

    def get(self, run_id: str) -> RunRecord:
        self.calls.append(("get", run_id))
        return self.store.update(run_id, status="RUNNING")

    def cancel(self, run_id: str, *, wait: float = 60.0) -> RunRecord:
        self.calls.append(("cancel", run_id))
        return self.store.update(run_id, status="KILLED", error="deleted on the cluster")

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        self.calls.append(("logs", run_id))
        return ("", offset) if offset else ("step log\n", 9)

    def wait(self, run_id: str, *, timeout: float | None = None) -> RunRecord:
        return self.get(run_id)


@pytest.fixture
def remote_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(executors, "_classes", {**executors._classes, RemoteExecutor.name: RemoteExecutor})
    RemoteExecutor.calls = []
    RunStore().create(RunRecord(id="nbs-00000000aa", notebook="train.ipynb", status="RUNNING", executor=RemoteExecutor.name))
    return "nbs-00000000aa"


@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_the_command_goes_to_the_runs_own_executor(remote_run: str, command: str) -> None:
    assert cli.main([command, remote_run]) == 0
    assert (command if command != "status" else "get", remote_run) in RemoteExecutor.calls


def test_cancel_of_a_remote_run_is_not_decided_here(remote_run: str) -> None:
    """The local executor would call a run without a local process KILLED while it goes on running remotely."""
    cli.main(["cancel", remote_run])
    assert RunStore().get(remote_run).error == "deleted on the cluster"


def test_runs_refreshes_each_unfinished_run_through_one_executor_of_its_kind(remote_run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One executor (and one store) a kind for the whole list, not one a run: a cluster client is made once."""
    made: list[Executor] = []

    def counting_init(self: Executor, **options: Any) -> None:
        made.append(self)
        Executor.__init__(self, **options)

    monkeypatch.setattr(RemoteExecutor, "__init__", counting_init)
    store = RunStore()
    store.create(RunRecord(id="nbs-00000000bb", notebook="train.ipynb", status="RUNNING", executor=RemoteExecutor.name))
    store.create(RunRecord(id="nbs-00000000cc", notebook="train.ipynb", status="SUCCEEDED", executor=RemoteExecutor.name))
    assert cli.main(["runs", "--json"]) == 0
    assert sorted(RemoteExecutor.calls) == [("get", "nbs-00000000aa"), ("get", "nbs-00000000bb")]  # a finished run is not asked
    assert len(made) == 1 and made[0].store.path == store.path
