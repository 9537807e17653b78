"""Following a local run wakes when its worker exits, not on the next look (issue 19's review)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.executors import new_run_id
from workflow_compiler.executors.local import LocalExecutor
from workflow_compiler.store import RunRecord

PY = Path(sys.executable).name  # resolved beside the interpreter, as the executor does for nbscale-step
#: Far longer than a worker takes to run the one short step below: a follower that polls would sleep through it.
LONG_LOOK = 60.0


def _one_step(code: str) -> dict[str, Any]:
    step = {"name": "s", "container": {"image": "unused", "command": [PY, "-c", code]}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "t-"},
            "spec": {"entrypoint": "main", "templates": [{"name": "main", "dag": {"tasks": [{"name": "s", "template": "s"}]}}, step]}}


def _wait(executor: LocalExecutor, run_id: str) -> RunRecord:
    return executor.wait(run_id, timeout=2 * LONG_LOOK, interval=LONG_LOOK)


def _last_update(executor: LocalExecutor, run_id: str) -> RunRecord:
    return list(executor.updates(run_id, interval=LONG_LOOK))[-1]


@pytest.mark.parametrize("follow", [_wait, _last_update], ids=["wait", "updates"])
def test_following_a_run_returns_promptly_after_it_ends(follow: Callable[[LocalExecutor, str], RunRecord], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_TRACKING_AGENT", "0")  # the step is no notebook: no MLflow agent to start
    executor = LocalExecutor(root=tmp_path)
    record = executor.submit(_one_step("import time; time.sleep(0.5)"), record=RunRecord(id=new_run_id(), notebook="x.ipynb"))
    started = time.monotonic()
    final = follow(executor, record.id)
    assert final.status == "SUCCEEDED", final.error
    assert time.monotonic() - started < LONG_LOOK / 3  # woken by the worker's exit, not after a look's interval


def test_wait_still_honours_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_TRACKING_AGENT", "0")
    executor = LocalExecutor(root=tmp_path)
    record = executor.submit(_one_step("import time; time.sleep(30)"), record=RunRecord(id=new_run_id(), notebook="x.ipynb"))
    try:
        started = time.monotonic()
        assert not executor.wait(record.id, timeout=0.5, interval=LONG_LOOK).done
        assert time.monotonic() - started < 5
    finally:
        assert executor.cancel(record.id, wait=30).status == "KILLED"
