"""Logs and cancel of Argo runs against tests/kube_sim (a simulation of the Kubernetes API and Argo).

Logs: step blocks in DAG order, read by offset while pods appear, and a note instead of a failure
when pod GC deleted a pod. Cancel: ``shutdown: Stop`` (the exit handler runs), ``Terminate`` after
the grace period, KILLED only once Argo says the Workflow ended, RayJobs deleted by run-id label.
"""

from __future__ import annotations

import time

import pytest
from argo_helpers import argo_executor, submit_run

from workflow_compiler.executors.argo import RUN_ID_LABEL
from workflow_compiler.executors.argo.logs import step_header


def _read_following(executor, run_id: str) -> tuple[str, list[int]]:
    """What ``nbscale logs -f`` reads: offsets until the run is over and read to the end; and how many blocks each read saw."""
    offset, text, blocks = 0, "", []
    while True:
        chunk, offset = executor.logs(run_id, offset)
        text += chunk
        blocks.append(text.count("----- step "))
        if not chunk and executor.get(run_id).done:
            return text, blocks
        time.sleep(0.1)


def test_logs_follow_steps_in_dag_order_as_pods_appear(kube_sim, tmp_path):
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor, pipeline=True)

    text, blocks = _read_following(executor, record.id)

    expected = "".join(step_header(step) + "".join(f"{step}: line {i}\n" for i in (1, 2, 3))
                       for step in ("mlflow-parent", "prepare", "train"))
    assert text.startswith(expected)
    assert text[len(expected):] == step_header("close-parent-run") + "exit handler: closed the parent run\n"
    assert blocks[0] < 3 and blocks[-1] == 4  # steps were picked up as their pods started
    whole, end = executor.logs(record.id, 0)
    assert whole == text and end == len(text.encode())


def test_a_step_whose_pod_was_deleted_says_where_its_output_is(kube_sim, tmp_path):
    kube_sim.behaviour.pod_gc = True
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    executor.wait(record.id, timeout=20)
    executor.store.update(record.id, mlflow_run_id="0123abcd", links={"mlflow": "http://mlflow.example/#/runs/0123abcd"})

    text, _ = executor.logs(record.id)

    assert kube_sim.sim.list("pods", kube_sim.namespace) == []
    assert text.startswith(step_header("notebook"))
    assert ("[the pod of step notebook is gone (pod GC); its output notebook and HTML are in MLflow run 0123abcd "
            "(http://mlflow.example/#/runs/0123abcd)]") in text


def test_log_read_while_running_is_kept_when_the_pod_goes(kube_sim, tmp_path):
    kube_sim.behaviour.pod_gc, kube_sim.behaviour.step_seconds = True, 1.5
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    deadline = time.monotonic() + 20
    while "line 1" not in executor.logs(record.id)[0]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    before, offset = executor.logs(record.id)
    executor.wait(record.id, timeout=20)

    rest, _ = executor.logs(record.id, offset)

    assert "notebook: line 1\n" in before
    assert rest.endswith(f"MLflow, in the run tagged nbscale.workflow={record.workflow_name}]\n")


def test_cancel_stops_runs_the_exit_handler_then_killed(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds = 30
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor, pipeline=True)
    executor.wait(record.id, timeout=0.8)
    assert executor.get(record.id).status == "RUNNING"

    killed = executor.cancel(record.id, wait=10)

    wf = kube_sim.sim.get("workflows", kube_sim.namespace, record.workflow_name)
    assert wf["spec"]["shutdown"] == "Stop"  # never escalated: Stop was enough
    assert killed.status == "KILLED" and "Stopped with strategy 'Stop'" in killed.error and killed.cancel_requested
    assert killed.status_label == "killed"  # once ended, the stop is no longer under way
    exit_node = [n for n in wf["status"]["nodes"].values() if n["name"].endswith(".onExit")]
    assert exit_node and exit_node[0]["phase"] == "Succeeded"  # the parent MLflow run was closed


def test_cancel_terminates_after_the_grace_period(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds, kube_sim.behaviour.exit_seconds = 30, 60  # an exit handler that hangs
    executor = argo_executor(kube_sim, tmp_path, stop_grace=1.0)
    record = submit_run(executor, pipeline=True)
    executor.wait(record.id, timeout=0.8)
    started = time.monotonic()

    killed = executor.cancel(record.id, wait=10)

    wf = kube_sim.sim.get("workflows", kube_sim.namespace, record.workflow_name)
    assert wf["spec"]["shutdown"] == "Terminate" and 1.0 <= time.monotonic() - started < 10
    assert killed.status == "KILLED" and "Terminate" in killed.error


def test_cancel_that_cannot_finish_in_time_is_not_killed_yet_and_the_next_look_terminates(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds, kube_sim.behaviour.exit_seconds = 30, 60
    grace = 4.0  # long enough that the two looks below come before it on a loaded 2-core machine
    executor = argo_executor(kube_sim, tmp_path, stop_grace=grace)
    record = submit_run(executor, pipeline=True)
    executor.wait(record.id, timeout=0.8)

    asked = time.monotonic()
    stopping = executor.cancel(record.id, wait=0.3)  # the REST API's short wait
    again = executor.cancel(record.id, wait=0.3)
    assert time.monotonic() - asked < grace, "the machine was too slow for this test's grace period"

    assert stopping.status == again.status == "RUNNING" and stopping.cancel_requested == again.cancel_requested
    assert stopping.status_label == "stopping" and stopping.to_api()["status_label"] == "stopping"
    assert "still stopping" in executor.stop_hint(stopping) and f"delete workflow {record.workflow_name}" in executor.stop_hint(stopping)
    time.sleep(max(0.0, asked + grace - time.monotonic()) + 0.2)
    assert executor.wait(record.id, timeout=10).status == "KILLED"  # a later get escalated to Terminate


def test_a_stop_that_takes_longer_than_the_wait_reads_stopping_until_the_workflow_ends(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds, kube_sim.behaviour.stop_seconds = 30, 1.5  # pods in their grace period
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    executor.wait(record.id, timeout=0.8)

    stopping = executor.cancel(record.id, wait=0.3)

    assert stopping.status == "RUNNING" and stopping.status_label == "stopping"
    killed = executor.wait(record.id, timeout=10)
    assert killed.status == "KILLED" and killed.status_label == "killed" and "Stopped with strategy 'Stop'" in killed.error


@pytest.mark.parametrize("kind", ["sweep", "run"])
def test_cancel_deletes_the_runs_rayjobs(kube_sim, tmp_path, kind):
    kube_sim.behaviour.step_seconds = 30
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    executor.store.update(record.id, kind=kind)
    rayjob = {"apiVersion": "ray.io/v1", "kind": "RayJob", "spec": {"entrypoint": "python -m x"},
              "metadata": {"name": "sweep-x", "labels": {RUN_ID_LABEL: record.id}}}
    other = {**rayjob, "metadata": {"name": "sweep-y", "labels": {RUN_ID_LABEL: "nbs-someoneelse"}}}
    for job in (rayjob, other):
        status, answer = kube_sim.sim.create("rayjobs", kube_sim.namespace, job)
        assert status == 201, answer

    kube_sim.sim.fail("DELETE", r"/rayjobs$", 403, times=5)  # the chart's Role grants delete, not deletecollection

    executor.cancel(record.id, wait=5)

    assert [j["metadata"]["name"] for j in kube_sim.sim.list("rayjobs", kube_sim.namespace)] == ["sweep-y"]


def test_stream_logs_follows_the_running_pod_and_matches_the_log(kube_sim, tmp_path):
    kube_sim.behaviour.step_seconds, kube_sim.behaviour.log_lines = 1.5, 5
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor, pipeline=True)

    chunks = list(executor.stream_logs(record.id))

    assert "".join(chunks) == executor.logs(record.id)[0]
    assert "train: line 5\n" in "".join(chunks)
    assert len(kube_sim.sim.state.followed) >= 2  # pods were streamed with follow=true, not only polled
