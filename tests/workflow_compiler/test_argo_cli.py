"""``nbscale`` end to end on the Argo executor, against tests/kube_sim (a simulation of the Kubernetes
API and of Argo): the cluster is reached through a kubeconfig file, as a user's would be; inside a
pod with a cluster config, argo is the default executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from argo_helpers import EXAMPLES

from workflow_compiler.executors.selection import POD_NAMESPACE_FILE_ENV, default_executor_class, default_executor_name

NBSCALE = str(Path(sys.executable).with_name("nbscale"))


@pytest.fixture
def cli_env(kube_sim, tmp_path):
    """The CLI's environment: the simulation's kubeconfig, a private NBSCALE_HOME, no pod."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "NBSCALE_CLUSTER_CONFIG")}
    env.update(KUBECONFIG=str(kube_sim.kubeconfig), NBSCALE_HOME=str(tmp_path / "home"), NO_COLOR="1", COLUMNS="200",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


def nbscale(env, *args, check=True):
    result = subprocess.run([NBSCALE, *args], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_run_status_and_logs_on_argo(kube_sim, cli_env):
    ran = nbscale(cli_env, "run", "pipeline.yaml", "--executor", "argo", "--json")

    record = json.loads(ran.stdout)
    assert record["status"] == "SUCCEEDED" and record["executor"] == "argo" and record["namespace"] == kube_sim.namespace
    assert [s["name"] for s in record["steps"]] == ["mlflow-parent", "prepare", "train"]
    status = json.loads(nbscale(cli_env, "status", record["id"], "--json").stdout)
    assert status["status"] == "SUCCEEDED" and status["workflow_name"] == record["workflow_name"]
    logs = nbscale(cli_env, "logs", "-f", record["id"]).stdout
    assert logs.index("----- step prepare -----") < logs.index("----- step train -----") and "train: line 3" in logs
    listed = nbscale(cli_env, "runs").stdout
    assert record["id"] in listed and "SUCCEEDED" in listed


def test_detach_then_follow_logs_and_cancel(kube_sim, cli_env):
    kube_sim.behaviour.step_seconds = 30
    started = nbscale(cli_env, "run", "pipeline.yaml", "--executor", "argo", "--detach", "--json")
    run_id = json.loads(started.stdout)["id"]

    follow = subprocess.Popen([NBSCALE, "logs", "-f", run_id], cwd=EXAMPLES, env=cli_env, stdout=subprocess.PIPE, text=True)
    cancelled = nbscale(cli_env, "cancel", run_id, "--wait", "20")
    out, _ = follow.communicate(timeout=60)

    assert f"{run_id}: KILLED" in cancelled.stdout
    assert "----- step mlflow-parent -----" in out and "exit handler: closed the parent run" in out
    assert follow.returncode == 0
    status = json.loads(nbscale(cli_env, "status", run_id, "--json").stdout)
    assert status["status"] == "KILLED" and "Stop" in status["error"]


def test_cancel_still_stopping_exits_1_with_what_to_do(kube_sim, cli_env):
    kube_sim.behaviour.step_seconds, kube_sim.behaviour.exit_seconds = 30, 60
    run_id = json.loads(nbscale(cli_env, "run", "pipeline.yaml", "--executor", "argo", "--detach", "--json").stdout)["id"]

    cancelled = nbscale(cli_env, "cancel", run_id, "--wait", "1", check=False)

    assert cancelled.returncode == 1
    assert "still stopping after 1 s" in cancelled.stderr and "kubectl -n nbscale-sim delete workflow nbscale-wine-pipeline-" in cancelled.stderr


def test_inside_a_pod_with_a_cluster_config_argo_is_the_default(kube_sim, cli_env, tmp_path):
    (tmp_path / "namespace").write_text(kube_sim.namespace)
    (tmp_path / "cluster.yaml").write_text(f"namespace: {kube_sim.namespace}\n")
    cli_env.update(KUBERNETES_SERVICE_HOST="127.0.0.1", NBSCALE_CLUSTER_CONFIG=str(tmp_path / "cluster.yaml"),
                   **{POD_NAMESPACE_FILE_ENV: str(tmp_path / "namespace")})
    cli_env.pop("KUBERNETES_SERVICE_PORT", None)  # no in-cluster service account here: the kubeconfig is used

    record = json.loads(nbscale(cli_env, "run", "train.ipynb", "--json").stdout)
    local = json.loads(nbscale(cli_env, "run", "train.ipynb", "--executor", "local", "--detach", "--json").stdout)

    assert record["executor"] == "argo" and record["status"] == "SUCCEEDED" and len(kube_sim.workflows()) == 1
    assert local["executor"] == "local"
    nbscale(cli_env, "cancel", local["id"], "--wait", "30")


@pytest.mark.parametrize(("service_host", "namespace_file", "cluster_config", "expected"), [
    ("10.0.0.1", "ml", "cluster.yaml", "argo"),
    ("", "ml", "cluster.yaml", "local"),  # not in a pod
    ("10.0.0.1", None, "cluster.yaml", "local"),  # no service account namespace
    ("10.0.0.1", "", "cluster.yaml", "local"),  # an empty one
    ("10.0.0.1", "ml", "", "local"),  # no cluster config: nbscale is not set up for this cluster
])
def test_default_executor_name(tmp_path, service_host, namespace_file, cluster_config, expected):
    env = {"KUBERNETES_SERVICE_HOST": service_host, "NBSCALE_CLUSTER_CONFIG": cluster_config,
           POD_NAMESPACE_FILE_ENV: str(tmp_path / "namespace")}
    if namespace_file is not None:
        (tmp_path / "namespace").write_text(namespace_file)
    assert default_executor_name(env) == expected
    assert default_executor_class(env).rsplit(".", 1)[1] == {"argo": "ArgoExecutor", "local": "LocalExecutor"}[expected]


@pytest.mark.parametrize(("progress", "status", "cancel", "headline", "table"), [
    ({"queued": 1, "detail": "queued in team-a"}, "RUNNING", False, "nbs-0123456789 queued in team-a for", "QUEUED"),
    ({"queued": 1, "running": 1, "detail": "queued in team-a"}, "RUNNING", False,
     "nbs-0123456789 running (queued in team-a) for", "RUNNING"),
    ({}, "RUNNING", False, "RUNNING nbs-0123456789 in", "RUNNING"),
    ({"queued": 1, "detail": "queued in team-a"}, "KILLED", False, "KILLED nbs-0123456789 in", "KILLED"),
    ({"queued": 1, "detail": "queued in team-a"}, "RUNNING", True, "nbs-0123456789 stopping for", "STOPPING"),
    ({}, "KILLED", True, "KILLED nbs-0123456789 in", "KILLED"),
])
def test_the_cli_shows_a_queued_or_stopping_run_as_such(progress, status, cancel, headline, table):
    """The headline and the table's status column both follow the record's ``phase`` (as the Runs panel's badge does)."""
    from rich.console import Console

    from workflow_compiler import cli_render
    from workflow_compiler.store import Progress, RunRecord

    record = RunRecord(id="nbs-0123456789", notebook="train.ipynb", status=status, started="2026-01-01T00:00:00+00:00",
                       finished="2026-01-01T00:00:01+00:00" if status == "KILLED" else None, progress=Progress(**progress),
                       cancel_requested="2026-01-01T00:00:00.5+00:00" if cancel else None)
    console = Console(record=True, width=200, color_system=None)
    cli_render.summary(record, console)
    console.print(cli_render.runs_table([record], 1))
    lines = console.export_text().splitlines()
    assert lines[0].startswith(headline)
    row = next(i for i, line in enumerate(lines) if line.startswith("id ")) + 1
    assert lines[row].split()[2] == table
    assert lines[row + 1].strip() == "train.ipynb" + ("" if status == "KILLED" or not progress else f"  ({progress['detail']})")
    assert record.to_api()["phase"] == (table.lower() if table in ("QUEUED", "STOPPING") else None)


def test_runs_with_the_cluster_down_lists_what_was_recorded_and_says_so(kube_sim, cli_env, tmp_path):
    from kube_sim.fixtures import write_kubeconfig

    kube_sim.behaviour.step_seconds = 60
    ids = [json.loads(nbscale(cli_env, "run", "train.ipynb", "--executor", "argo", "--detach", "--json").stdout)["id"]
           for _ in range(2)]
    cli_env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "down", "http://127.0.0.1:9", kube_sim.namespace))

    listed = nbscale(cli_env, "runs", "--json")

    assert {r["id"]: r["status"] for r in json.loads(listed.stdout)["runs"]} == dict.fromkeys(ids, "PENDING")
    assert "could not refresh runs of the argo executor" in listed.stderr
    assert listed.stderr.count("warning") == 1  # asked once, not once per run
