"""The local executor's Argo interpreter, on hand-written manifests of real processes."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.executors.interpreter import WorkflowInterpreter

PY = Path(sys.executable).name  # resolved beside the interpreter, as the executor does for nbscale-step


def container(name: str, code: str, *args: str, **extra: Any) -> dict[str, Any]:
    template = {"name": name, "container": {"image": "unused", "command": [PY, "-c", code], "args": list(args),
                                            "workingDir": "/work", "volumeMounts": [{"name": "ws", "mountPath": "/work"}]}}
    template.update(extra)
    return template


def workflow(tasks: list[dict[str, Any]], templates: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "t-"},
            "spec": {"entrypoint": "main", "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "c"}}],
                     "templates": [{"name": "main", "dag": {"tasks": tasks}}, *templates], **spec}}


def run(manifest: dict[str, Any], tmp_path: Path) -> tuple[str, WorkflowInterpreter]:
    events: list[tuple[str, str]] = []
    interp = WorkflowInterpreter(manifest, workflow_name="t-abc", root=tmp_path, run_dir=tmp_path / "run",
                                 log_file=open(tmp_path / "log.txt", "ab"), on_task=lambda n, p, i: events.append((n, p)))
    interp.events = events  # type: ignore[attr-defined]
    return interp.run(), interp


STAMP = "import sys, time, json; t0=time.time(); time.sleep(float(sys.argv[2])); open(sys.argv[1],'w').write(json.dumps([t0, time.time()]))"


def test_dag_order_and_parallel_branches(tmp_path):
    tasks = [{"name": n, "template": "stamp", "dependencies": deps, "arguments": {"parameters": [{"name": "n", "value": n}]}}
             for n, deps in [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]]
    stamp = container("stamp", STAMP, "{{inputs.parameters.n}}.json", "1", inputs={"parameters": [{"name": "n"}]})
    phase, _ = run(workflow(tasks, [stamp]), tmp_path)
    t = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abcd"}
    assert phase == "Succeeded"
    assert t["a"][1] <= t["b"][0] and t["a"][1] <= t["c"][0]
    assert t["b"][0] < t["c"][1] and t["c"][0] < t["b"][1], "independent steps must overlap"
    assert t["d"][0] >= max(t["b"][1], t["c"][1])


def test_substitution_is_one_pass_and_values_stay_literal(tmp_path):
    hostile = "{{workflow.name}} $(id) \"; rm -rf / \n!!python/object"
    write_argv = "import sys, json; open('argv.json','w').write(json.dumps(sys.argv[1:]))"
    tasks = [{"name": "a", "template": "w", "arguments": {"parameters": [{"name": "v", "value": "{{workflow.parameters.v}}"}]}}]
    manifest = workflow(tasks, [container("w", write_argv, "{{inputs.parameters.v}}", "{{workflow.name}}", inputs={"parameters": [{"name": "v"}]})],
                        arguments={"parameters": [{"name": "v", "value": hostile}]})
    phase, _ = run(manifest, tmp_path)
    assert phase == "Succeeded"
    assert json.loads((tmp_path / "argv.json").read_text()) == [hostile, "t-abc"]


def test_output_parameters_global_outputs_and_exit_handler(tmp_path):
    produce = container("produce", "import pathlib; pathlib.Path('/out/id'.replace('/out', __import__('sys').argv[1])).write_text('run-42\\n')", "/out",
                        outputs={"parameters": [{"name": "id", "valueFrom": {"path": "/out/id"}, "globalName": "the-id"}]})
    produce["container"]["volumeMounts"].append({"name": "out", "mountPath": "/out"})
    produce["volumes"] = [{"name": "out", "emptyDir": {}}]
    consume = container("consume", "import sys; open('got.txt','w').write(sys.argv[1])", "{{inputs.parameters.id}}", inputs={"parameters": [{"name": "id"}]})
    on_exit = container("bye", "import sys; open('exit.txt','w').write(' '.join(sys.argv[1:]))",
                        "{{workflow.status}}", "{{workflow.outputs.parameters.the-id}}")
    tasks = [{"name": "p", "template": "produce"},
             {"name": "c", "template": "consume", "depends": "p", "arguments": {"parameters": [{"name": "id", "value": "{{tasks.p.outputs.parameters.id}}"}]}}]
    phase, _ = run(workflow(tasks, [produce, consume, on_exit], onExit="bye"), tmp_path)
    assert phase == "Succeeded"
    assert (tmp_path / "got.txt").read_text() == "run-42"
    assert (tmp_path / "exit.txt").read_text() == "Succeeded run-42"


def test_retries_until_success(tmp_path):
    flaky = ("import pathlib, sys; p = pathlib.Path('count'); n = int(p.read_text()) + 1 if p.exists() else 1; "
             "p.write_text(str(n)); sys.exit(0 if n >= 3 else 1)")
    phase, interp = run(workflow([{"name": "f", "template": "flaky"}], [container("flaky", flaky, retryStrategy={"limit": 2})]), tmp_path)
    assert phase == "Succeeded" and interp.results["f"].attempts == 3


def test_retries_exhausted_fail_and_skip_downstream(tmp_path):
    tasks = [{"name": "bad", "template": "bad"}, {"name": "after", "template": "ok", "dependencies": ["bad"]}]
    templates = [container("bad", "raise SystemExit(3)", retryStrategy={"limit": 1}), container("ok", "open('ran','w')")]
    phase, interp = run(workflow(tasks, templates), tmp_path)
    assert phase == "Failed" and interp.results["bad"].attempts == 2 and "exit code 3" in interp.results["bad"].message
    assert interp.results["after"].phase == "Skipped" and not (tmp_path / "ran").exists()


def test_active_deadline_stops_the_step(tmp_path):
    started = time.monotonic()
    phase, interp = run(workflow([{"name": "s", "template": "slow"}], [container("slow", "import time; time.sleep(60)", activeDeadlineSeconds=1)]), tmp_path)
    assert phase == "Failed" and "activeDeadlineSeconds=1" in interp.results["s"].message
    assert time.monotonic() - started < 15


def test_stop_cancels_running_steps(tmp_path):
    manifest = workflow([{"name": "s", "template": "slow"}, {"name": "t", "template": "slow", "dependencies": ["s"]}],
                        [container("slow", "import time; time.sleep(60)")])
    interp = WorkflowInterpreter(manifest, workflow_name="t-x", root=tmp_path, run_dir=tmp_path / "run", log_file=open(tmp_path / "l", "ab"))
    threading.Timer(1.0, interp.stop).start()
    started = time.monotonic()
    assert interp.run() == "Stopped"
    assert interp.results["s"].phase == "Stopped" and interp.results["t"].phase == "Skipped"
    assert time.monotonic() - started < 15


def test_a_stop_while_a_step_is_starting_prevents_its_process(tmp_path):
    # The stop lands after the task is committed to an attempt but before its process exists: the
    # window a `nbscale cancel` right after `nbscale run --detach` hits. No process may start then.
    manifest = workflow([{"name": "s", "template": "slow"}], [container("slow", "import time; time.sleep(60)")])
    stopped_at_start = []

    def on_task(name: str, phase: str, info: dict[str, Any]) -> None:
        if phase == "Running":
            interp.stop()
            stopped_at_start.append(name)

    interp = WorkflowInterpreter(manifest, workflow_name="t-x", root=tmp_path, run_dir=tmp_path / "run",
                                 log_file=open(tmp_path / "l", "ab"), on_task=on_task)
    started = time.monotonic()
    assert interp.run() == "Stopped"
    assert stopped_at_start == ["s"] and interp.results["s"].phase == "Stopped"
    assert time.monotonic() - started < 15


def test_unknown_expression_is_an_error(tmp_path):
    from workflow_compiler.errors import ExecutionError

    with pytest.raises(ExecutionError, match="inputs.parameters.nope"):
        run(workflow([{"name": "a", "template": "x"}], [container("x", "pass", "{{inputs.parameters.nope}}")]), tmp_path)
