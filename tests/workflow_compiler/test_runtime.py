"""The step runtime ``nbscale-step`` against real kernels and real MLflow stores, through its CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import nbformat
import pytest
from mlflow.tracking import MlflowClient

from workflow_compiler.stepconfig import StepConfig, argo_safe_json
from workflow_compiler.tracking_uri import default_tracking_uri

pytestmark = pytest.mark.slow

STEP = str(Path(sys.executable).parent / "nbscale-step")
HOSTILE = ['"; rm -rf /', "$(id)", "`id`", "{{workflow.name}}", "{{inputs.parameters.x}}", "line one\nline two\r\n",
           "key: value\n- item\n!!python/object:os.system", "\\n\\\\ \"quoted\" 'single'", "\x00\x1b[31m\ttab",
           "☃ ünïcödé 🚀", "-p", "--config", "%(x)s {x} ${HOME}"]


def config(notebook: str, **fields: Any) -> str:
    """A step config as the compiler writes it, for a fresh experiment."""
    fields.setdefault("experiment", f"rt-{uuid.uuid4().hex[:8]}")
    fields.setdefault("user", "alice")
    return StepConfig(notebook=notebook, **fields).to_arg()


def step(workspace: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``nbscale-step`` in ``workspace`` (no shell)."""
    return subprocess.run([STEP, *args], cwd=workspace, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_step(workspace: Path, notebook: str, *params: str, cfg: dict[str, Any] | None = None, extra: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    """``nbscale-step run``; returns the process, result.json and the output folder."""
    out = workspace.parent / f"out-{uuid.uuid4().hex[:6]}"
    args = ["run", "--config", config(notebook, **(cfg or {})), "--output-dir", str(out)]
    for p in params:
        args += ["--parameter", p]
    proc = step(workspace, *args, *extra, env=env)
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    return proc, result, out


def client(uri: str | None = None) -> MlflowClient:
    """A client on the session's default store (or ``uri``)."""
    return MlflowClient(tracking_uri=uri or default_tracking_uri())


def artifacts(mlflow: MlflowClient, run_id: str) -> set[str]:
    """Names of a run's top-level artifacts."""
    return {a.path for a in mlflow.list_artifacts(run_id)}


def test_success_params_kernel_metrics_tags_and_artifacts(runtime_workspace: Path) -> None:
    proc, result, out = run_step(runtime_workspace, "echo.ipynb", 'text="hello"', "count=7",
                                 cfg={"image": "nbscale/runner:1", "step": "train", "tags": {"team": "vision"}},
                                 env={"NBSCALE_WORKFLOW_NAME": "nbscale-echo-abc12"})
    assert proc.returncode == 0, proc.stderr
    assert result["status"] == "SUCCEEDED" and result["mlflow_status"] == "FINISHED" and result["error"] is None
    assert result["metrics"] == {"count_seen": 7.0, "text_length": 5.0}
    assert json.loads((out / "progress.json").read_text()) == {"cells_done": 4, "cells_total": 4, "status": "SUCCEEDED"}  # the user's 4: not the injected one
    nb = nbformat.read(out / "output.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and nb.cells.index(injected[0]) == 2  # right after the parameters cell
    assert "<html" in (out / "output.html").read_text()[:2000].lower()

    received = json.loads((runtime_workspace / "received.json").read_text())  # written in the notebook's folder
    assert received["cwd"] == str(runtime_workspace)
    assert received["env"]["MLFLOW_RUN_ID"] == result["mlflow_run_id"]
    run = client().get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params == {"text": "hello", "count": "7", "items": "[]"}  # defaults included
    assert run.data.metrics == {"count_seen": 7.0, "text_length": 5.0}  # logged by the kernel, into this run
    sha = __import__("hashlib").sha256((runtime_workspace / "echo.ipynb").read_bytes()).hexdigest()
    tags = run.data.tags
    assert {k: tags.get(k) for k in ("mlflow.user", "nbscale.notebook", "nbscale.notebook_sha256", "nbscale.workflow",
                                     "nbscale.image", "nbscale.step", "team", "nbscale.status")} == {
        "mlflow.user": "alice", "nbscale.notebook": "echo.ipynb", "nbscale.notebook_sha256": sha,
        "nbscale.workflow": "nbscale-echo-abc12", "nbscale.image": "nbscale/runner:1", "nbscale.step": "train",
        "team": "vision", "nbscale.status": "SUCCEEDED"}
    assert "nbscale.git_commit" not in tags  # the workspace is not a git repository
    assert artifacts(client(), run.info.run_id) == {"output.ipynb", "output.html"}
    runs = client().search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # the kernel did not start a run of its own


def test_git_commit_is_tagged_inside_a_repository(runtime_workspace: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=runtime_workspace, check=True)
    subprocess.run([*git, "add", "."], cwd=runtime_workspace, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=runtime_workspace, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=runtime_workspace, capture_output=True, text=True, check=True).stdout.strip()
    proc, result, _ = run_step(runtime_workspace, "behave.ipynb", cfg={"html": False})
    assert proc.returncode == 0, proc.stderr
    tags = client().get_run(result["mlflow_run_id"]).data.tags
    assert tags["mlflow.source.git.commit"] == tags["nbscale.git_commit"] == head
    assert result["outputs"]["html"] is None
    assert artifacts(client(), result["mlflow_run_id"]) == {"output.ipynb"}


def test_hostile_values_arrive_byte_for_byte_and_run_nothing(runtime_workspace: Path, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    values = [*HOSTILE, f"$(touch {canary})", f"\"; touch {canary}; echo \"", f"'; import os; os.system('touch {canary}'); '"]
    text = "\n".join(values)
    # exactly the text the compiler puts in the manifest: argo_safe_json, braces escaped
    proc, result, _ = run_step(runtime_workspace, "echo.ipynb", f"text={argo_safe_json(text)}",
                               f"items={argo_safe_json(values)}")
    assert proc.returncode == 0, proc.stderr
    assert (runtime_workspace / "received-text.bin").read_bytes() == text.encode("utf-8")
    received = json.loads((runtime_workspace / "received.json").read_text())
    assert received["items"] == values and received["text"] == text
    assert not canary.exists()
    assert client().get_run(result["mlflow_run_id"]).data.params["text"] == text


def test_cell_error_fails_with_cell_and_error_name_and_keeps_partial_output(runtime_workspace: Path) -> None:
    proc, result, out = run_step(runtime_workspace, "behave.ipynb", 'mode="raise"')
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"nbscale-step: error: FAILED: {result['error']}"
    assert result["status"] == "FAILED" and result["mlflow_status"] == "FAILED"
    assert result["error_detail"]["ename"] == "ValueError" and result["error_detail"]["evalue"] == "boom 42"
    assert result["error_detail"]["cell_index"] == 3  # parameters, injected parameters, imports, this one
    assert "ValueError: boom 42" in result["error"] and "cell 3" in result["error"]
    assert json.loads((out / "progress.json").read_text())["status"] == "FAILED"
    nb = nbformat.read(out / "output.ipynb", as_version=4)
    assert any("started" in o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    run = client().get_run(result["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["nbscale.error.cell_index"] == "3" and run.data.tags["nbscale.error.ename"] == "ValueError"
    assert artifacts(client(), run.info.run_id) == {"output.ipynb", "output.html"}


@pytest.mark.parametrize(("mode", "reason"), [
    ("exit0", "called sys.exit(0) part-way: 1 later cell(s) did not run"),
    ("exit3", "raised SystemExit: 3"),
    ("die", "the kernel died while running cell 3"),
])
def test_early_exits_and_kernel_death_are_failed_never_finished(runtime_workspace: Path, mode: str, reason: str) -> None:
    proc, result, out = run_step(runtime_workspace, "behave.ipynb", f'mode="{mode}"')
    assert proc.returncode == 1, proc.stderr
    assert result["status"] == "FAILED" and reason in result["error"]
    run = client().get_run(result["mlflow_run_id"])
    assert run.info.status == "FAILED" and reason in run.data.tags["nbscale.error"]
    assert "output.ipynb" in artifacts(client(), run.info.run_id)
    assert (out / "output.ipynb").exists()




@pytest.mark.parametrize(("how", "mode"), [("sigterm", "sleep"), ("timeout", "sleep"), ("sigterm", "chatter")])
def test_cancel_and_timeout_end_killed_with_partial_notebook(runtime_workspace: Path, how: str, mode: str) -> None:
    # "chatter" prints without pause, so the stop lands while the runtime handles the kernel's output:
    # raised from the signal handler there, it used to hang the step (see runtime/interrupts.py)
    out = runtime_workspace.parent / f"out-{how}-{mode}"
    marker = {"sleep": "sleeping", "chatter": "chattering"}[mode]
    cfg = config("behave.ipynb", timeout_seconds=20 if how == "timeout" else None)
    proc = subprocess.Popen([STEP, "run", "--config", cfg, "--output-dir", str(out), "--parameter", f'mode="{mode}"'],
                            cwd=runtime_workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    # The step echoes the cells' output: the marker there means the runtime holds the cell's output,
    # which is what must survive the stop (progress.json alone says only that the cell started).
    printed, streams = threading.Event(), {"stdout": "", "stderr": ""}

    def read(name: str, stream: IO[str]) -> None:
        for line in stream:
            if len(streams[name]) < 100_000:  # chatter: keep the start, enough for a failure's message
                streams[name] += line
            if marker in line:
                printed.set()

    readers = [threading.Thread(target=read, args=(name, getattr(proc, name)), daemon=True) for name in streams]
    for reader in readers:
        reader.start()
    try:
        assert printed.wait(120), streams
        started = time.monotonic()
        if how == "sigterm":
            os.killpg(proc.pid, signal.SIGTERM)  # as the executor does: the whole process group
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the step did not stop within 60 s: {streams}")
        for reader in readers:
            reader.join(timeout=10)
        stderr = streams["stderr"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, stderr
    if how == "sigterm":
        assert time.monotonic() - started < 10  # within the executor's grace period
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "KILLED" and result["mlflow_status"] == "KILLED"
    assert ("timed out after 20 s" if how == "timeout" else "SIGTERM") in result["error"]
    nb = nbformat.read(out / "output.ipynb", as_version=4)
    assert any(marker in o.get("text", "") for o in nb.cells[3].outputs)  # the running cell's partial output
    assert not any("after" in o.get("text", "") for o in nb.cells[4].outputs)
    # the user's cells that ran to their end: the parameters cell and the first code cell; not the stopped one
    assert json.loads((out / "progress.json").read_text()) == {"cells_done": 2, "cells_total": 4, "status": "KILLED"}
    run = client().get_run(result["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert artifacts(client(), run.info.run_id) == {"output.ipynb", "output.html"}
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    assert str(out) not in ps  # neither the runtime nor its helper is left behind


@pytest.mark.parametrize(("args", "message"), [
    (["--parameter", "count=not json"], "parameter 'count': the value is not valid JSON"),
    (["--parameter", "count=NaN"], "parameter 'count': the value is not valid JSON"),
    (["--parameter", "nosuch=1"], "unknown parameter 'nosuch'"),
    (["--parameter", 'count="seven"'], "parameter 'count' expects int"),
    (["--parameter", "1x=1"], "is not NAME=JSON"),
    (["--parameter", "count=1", "--parameter", "count=2"], "given twice"),
    (["--parent-run-id", "x' or '1'='1"], "is not an MLflow run id"),
])
def test_bad_parameters_exit_2_with_one_line(runtime_workspace: Path, args: list[str], message: str) -> None:
    proc, _, _ = run_step(runtime_workspace, "echo.ipynb", extra=tuple(args))
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]
    assert not (runtime_workspace / "received.json").exists()


@pytest.mark.parametrize(("notebook", "message"), [
    ("missing.ipynb", "no such file"), ("../outside.ipynb", "outside the working directory"),
    ("notes.txt", "is not a notebook"), ("broken.ipynb", "is not valid JSON"),
])
def test_bad_notebooks_exit_2(runtime_workspace: Path, notebook: str, message: str) -> None:
    (runtime_workspace.parent / "outside.ipynb").write_text((runtime_workspace / "echo.ipynb").read_text())
    (runtime_workspace / "notes.txt").write_text("hello")
    (runtime_workspace / "broken.ipynb").write_text('{"cells": [')
    proc, result, _ = run_step(runtime_workspace, notebook)
    assert proc.returncode == 2 and message in proc.stderr
    assert result["status"] == "FAILED" and message in result["error"] and result["mlflow_run_id"] is None


def test_invalid_config_exit_2(runtime_workspace: Path) -> None:
    proc = step(runtime_workspace, "run", "--config", '{"notebook": "echo.ipynb"}', "--output-dir", "out")
    assert proc.returncode == 2 and "not a valid step config: experiment: Field required" in proc.stderr
    proc = step(runtime_workspace, "run", "--config", "{not json", "--output-dir", "out")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_pipeline_parent_run_nests_steps_and_closes_idempotently(runtime_workspace: Path) -> None:
    experiment = f"rt-pipe-{uuid.uuid4().hex[:6]}"
    out = runtime_workspace.parent / "parent-out"
    opened = step(runtime_workspace, "open-parent", "--config", config("", experiment=experiment), "--output-dir", str(out),
                  env={"NBSCALE_WORKFLOW_NAME": "nbscale-wine-x1"})
    assert opened.returncode == 0, opened.stderr
    parent_id = opened.stdout.strip()
    assert (out / "run-id").read_text() == parent_id
    proc, result, _ = run_step(runtime_workspace, "behave.ipynb", cfg={"experiment": experiment, "step": "prepare", "html": False},
                               extra=("--parent-run-id", parent_id))
    assert proc.returncode == 0, proc.stderr
    mlflow = client()
    child = mlflow.get_run(result["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent_id and child.info.run_name == "prepare"
    # a step that never reported (its pod vanished): still RUNNING until the exit handler runs
    stray = mlflow.create_run(child.info.experiment_id, tags={"mlflow.parentRunId": parent_id})
    for _ in range(2):  # idempotent
        closed = step(runtime_workspace, "close-parent", "--run-id", parent_id, "--workflow-status", "Failed")
        assert closed.returncode == 0, closed.stderr
    assert mlflow.get_run(parent_id).info.status == "FAILED"
    assert mlflow.get_run(stray.info.run_id).info.status == "KILLED"
    assert mlflow.get_run(child.info.run_id).info.status == "FINISHED"
    assert mlflow.get_run(parent_id).data.tags["nbscale.workflow"] == "nbscale-wine-x1"
    assert step(runtime_workspace, "close-parent", "--run-id", parent_id, "--workflow-status", "Succeeded").returncode == 0
    assert mlflow.get_run(parent_id).info.status == "FINISHED"
    bad = step(runtime_workspace, "close-parent", "--run-id", parent_id, "--workflow-status", "Running")
    assert bad.returncode == 2
    unopened = step(runtime_workspace, "close-parent", "--run-id", "", "--workflow-status", "Failed")
    assert unopened.returncode == 0 and "no parent run to close" in unopened.stderr


def test_mlflow_unreachable_fails_with_one_line(runtime_workspace: Path) -> None:
    proc, result, _ = run_step(runtime_workspace, "behave.ipynb", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert proc.returncode == 1 and "MLflow" in proc.stderr.strip().splitlines()[-1]
    assert result["status"] == "FAILED"


def test_against_a_real_mlflow_server(runtime_workspace: Path, mlflow_server: str) -> None:
    proc, result, _ = run_step(runtime_workspace, "echo.ipynb", "count=3", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert proc.returncode == 0, proc.stderr
    mlflow = client(mlflow_server)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics["count_seen"] == 3.0
    assert artifacts(mlflow, run.info.run_id) == {"output.ipynb", "output.html"}
    received = json.loads((runtime_workspace / "received.json").read_text())
    assert received["env"]["MLFLOW_TRACKING_URI"] == mlflow_server
