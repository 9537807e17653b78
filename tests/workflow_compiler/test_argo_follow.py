"""The Argo executor follows a Workflow by watching it: progress per step, compressed and offloaded
nodes, Kueue's queued state, and resuming after the watch ends or expires (410 Gone).

Against tests/kube_sim, a simulation of the Kubernetes API and of Argo's controller.
"""

from __future__ import annotations

import threading
import time

import pytest
from argo_helpers import argo_executor, follow_all, submit_run

from workflow_compiler.executors.argo.status import OFFLOADED


@pytest.mark.parametrize("compressed", [False, True], ids=["nodes", "compressedNodes"])
def test_pipeline_progress_per_step(kube_sim, tmp_path, compressed):
    kube_sim.behaviour.compress_nodes = compressed
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor, pipeline=True)
    assert record.executor == "argo" and record.namespace == kube_sim.namespace and record.workflow_name

    seen = follow_all(executor, record.id)

    final = seen[-1]
    assert final.status == "SUCCEEDED"
    assert [s.name for s in final.steps] == ["mlflow-parent", "prepare", "train"]
    assert all(s.status == "SUCCEEDED" for s in final.steps)
    assert (final.progress.done, final.progress.total, final.progress.unit) == (3, 3, "steps")
    done_counts = [r.progress.done for r in seen]
    assert done_counts == sorted(done_counts) and 0 < len(set(done_counts)) <= 4
    assert any(r.status == "RUNNING" and r.progress.running == 1 for r in seen)
    assert executor.store.get(record.id).status == "SUCCEEDED"


def test_offloaded_nodes_are_reported_not_shown_as_zero_steps(kube_sim, tmp_path):
    kube_sim.behaviour.offload_nodes = True
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)

    running = next(r for r in executor.updates(record.id) if r.status == "RUNNING")

    assert running.progress.detail == OFFLOADED
    assert "offloaded" in running.status_label
    assert executor.wait(record.id, timeout=20).status == "SUCCEEDED"
    text, _ = executor.logs(record.id)
    assert "offloaded" in text and f"argo logs -n {kube_sim.namespace} {record.workflow_name}" in text


def test_a_pod_kueue_holds_is_queued_not_running(kube_sim, tmp_path):
    kube_sim.behaviour.hold_queue = "team-a"
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)

    held = _wait_for(lambda: executor.get(record.id), lambda r: r.progress.queued == 1)

    assert held.status_label == "queued in team-a"
    assert held.progress.running == 0 and held.steps[0].error == "queued in team-a"
    assert held.to_api()["status_label"] == "queued in team-a"
    kube_sim.controller.release_gates()
    final = executor.wait(record.id, timeout=20)
    assert final.status == "SUCCEEDED" and final.progress.queued == 0 and final.status_label == "succeeded"


def test_the_watch_resumes_after_it_ends_and_relists_after_410(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds = 1.0
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor, pipeline=True)
    records = []

    def follow() -> None:
        records.extend(executor.updates(record.id))

    thread = threading.Thread(target=follow)
    thread.start()
    _wait_for(lambda: executor.store.get(record.id), lambda r: r.progress.done >= 1)
    kube_sim.sim.end_watches()  # the server ends the watch: resumed from the last resourceVersion
    time.sleep(0.3)
    kube_sim.sim.compact()  # history gone: the resumed watch gets 410 Gone and lists again
    thread.join(30)

    assert not thread.is_alive() and records[-1].status == "SUCCEEDED"
    watches = [path for method, path in kube_sim.sim.state.requests if method == "WATCH"]
    lists = [path for method, path in kube_sim.sim.state.requests if method == "GET" and path.endswith("/workflows")]
    assert len(watches) >= 3 and len(lists) >= 2  # first list + watch, resume, 410 then list + watch


def _wait_for(fetch, predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if predicate(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last: {value}"
        time.sleep(0.1)


def test_reattach_follows_own_runs_rebuilds_lost_records_and_ends_vanished_ones(kube_sim, tmp_path, monkeypatch):
    kube_sim.behaviour.step_seconds = 30
    before = argo_executor(kube_sim, tmp_path / "before")
    kept, vanished = submit_run(before), submit_run(before)
    monkeypatch.setenv("JUPYTERHUB_USER", "someone-else")
    theirs = submit_run(argo_executor(kube_sim, tmp_path / "theirs"))
    monkeypatch.delenv("JUPYTERHUB_USER")
    forgotten = submit_run(argo_executor(kube_sim, tmp_path / "forgotten"))  # a store that was lost
    kube_sim.sim.remove("workflows", kube_sim.namespace, vanished.workflow_name)

    attached = before.reattach()

    assert sorted(attached) == sorted([kept.id, forgotten.id])
    assert before.store.get(vanished.id).status == "FAILED" and "lost" in before.store.get(vanished.id).error
    rebuilt = before.store.get(forgotten.id)
    assert (rebuilt.notebook, rebuilt.workflow_name, rebuilt.executor) == ("train.ipynb", forgotten.workflow_name, "argo")
    assert theirs.id not in {r.id for r in before.store.list()[0]}
