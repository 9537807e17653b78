"""The interpreter's sweep forms on hand-written manifests of tiny real processes: ``withItems``
fan-out, and a ``resource`` template creating a RayJob (its entrypoint run here)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from workflow_compiler.errors import ExecutionError
from workflow_compiler.executors.interpreter import WorkflowInterpreter
from workflow_compiler.executors.local import check_local_manifest
from workflow_compiler.executors.rayjob_local import condition_holds, entrypoint_argv, resource_phase

PY = Path(sys.executable).name
STAMP = ("import sys, time, json; t0=time.time(); time.sleep(float(sys.argv[2]));"
         "open(sys.argv[1] + '.json','w').write(json.dumps({'t': [t0, time.time()], 'argv': sys.argv[3:]}))")


def container(name: str, code: str, *args: str, **extra: Any) -> dict[str, Any]:
    template = {"name": name, "container": {"image": "unused", "command": [PY, "-c", code], "args": list(args),
                                            "workingDir": "/work", "volumeMounts": [{"name": "ws", "mountPath": "/work"}]}}
    template.update(extra)
    return template


def workflow(tasks: list[dict[str, Any]], templates: list[dict[str, Any]], parallelism: int | None = None, **spec: Any) -> dict[str, Any]:
    main: dict[str, Any] = {"name": "main", "dag": {"tasks": tasks}}
    if parallelism:
        main["parallelism"] = parallelism
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "t-"},
            "spec": {"entrypoint": "main", "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "c"}}],
                     "templates": [main, *templates], **spec}}


def run(manifest: dict[str, Any], tmp_path: Path) -> tuple[str, WorkflowInterpreter]:
    interp = WorkflowInterpreter(manifest, workflow_name="t-abc", root=tmp_path, run_dir=tmp_path / "run",
                                 log_file=open(tmp_path / "log.txt", "ab"))
    return interp.run(), interp


def _stamps(tmp_path: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in names}


def test_with_items_runs_each_item_at_most_parallelism_at_once(tmp_path: Path) -> None:
    items = [{"name": f"i{n}", "value": v} for n, v in enumerate(['"a"', "{{workflow.name}}", "$(id); rm -rf /", "7"])]
    stamp = container("stamp", STAMP, "{{inputs.parameters.name}}", "0.6", "{{inputs.parameters.value}}",
                      inputs={"parameters": [{"name": "name"}, {"name": "value"}]})
    after = container("after", STAMP, "after", "0")
    tasks = [{"name": "fan", "template": "stamp", "withItems": items,
              "arguments": {"parameters": [{"name": "name", "value": "{{item.name}}"}, {"name": "value", "value": "{{item.value}}"}]}},
             {"name": "after", "template": "after", "dependencies": ["fan"]}]
    phase, interp = run(workflow(tasks, [stamp, after], parallelism=2), tmp_path)
    assert phase == "Succeeded"
    stamps = _stamps(tmp_path, ["i0", "i1", "i2", "i3", "after"])
    # Item values arrive literally: an item that looks like an expression is never expanded (one pass).
    assert [stamps[f"i{n}"]["argv"] for n in range(4)] == [['"a"'], ["{{workflow.name}}"], ["$(id); rm -rf /"], ["7"]]
    spans = [stamps[f"i{n}"]["t"] for n in range(4)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2, f"parallelism 2 allows two items at once, saw {most}"
    assert stamps["after"]["t"][0] >= max(e for _, e in spans), "a task after the fan-out waits for every item"
    assert sorted(interp.results) == ["after", "fan(0)", "fan(1)", "fan(2)", "fan(3)"]


def test_with_items_scalar_items_and_item_json(tmp_path: Path) -> None:
    write = "import sys; open(sys.argv[1] + '.txt', 'w').write(sys.argv[2])"
    echo = container("echo", write, "{{inputs.parameters.n}}", "{{inputs.parameters.v}}", inputs={"parameters": [{"name": "n"}, {"name": "v"}]})
    tasks = [{"name": "a", "template": "echo", "withItems": [1, "two"],
              "arguments": {"parameters": [{"name": "n", "value": "s{{item}}"}, {"name": "v", "value": "{{item}}"}]}},
             {"name": "b", "template": "echo", "withItems": [{"k": [1, {"x": None}]}],
              "arguments": {"parameters": [{"name": "n", "value": "m"}, {"name": "v", "value": "{{item.k}}|{{item}}"}]}}]
    assert run(workflow(tasks, [echo]), tmp_path)[0] == "Succeeded"
    assert (tmp_path / "s1.txt").read_text() == "1" and (tmp_path / "stwo.txt").read_text() == "two"
    assert (tmp_path / "m.txt").read_text() == '[1,{"x":null}]|{"k":[1,{"x":null}]}'


def test_a_failed_item_fails_the_workflow_and_skips_what_follows(tmp_path: Path) -> None:
    fail_odd = container("f", "import sys; sys.exit(int(sys.argv[1]) % 2)", "{{inputs.parameters.n}}", inputs={"parameters": [{"name": "n"}]})
    tasks = [{"name": "fan", "template": "f", "withItems": [0, 1, 2], "arguments": {"parameters": [{"name": "n", "value": "{{item}}"}]}},
             {"name": "after", "template": "ok", "dependencies": ["fan"]}]
    phase, interp = run(workflow(tasks, [fail_odd, container("ok", "open('ran', 'w')")]), tmp_path)
    assert phase == "Failed"
    assert [interp.results[f"fan({i})"].phase for i in range(3)] == ["Succeeded", "Failed", "Succeeded"]
    assert interp.results["after"].phase == "Skipped" and not (tmp_path / "ran").exists()


def test_item_is_not_visible_inside_the_template(tmp_path: Path) -> None:
    tasks = [{"name": "fan", "template": "x", "withItems": [1]}]
    with pytest.raises(ExecutionError, match=r"\{\{item\}\}"):
        run(workflow(tasks, [container("x", "pass", "{{item}}")]), tmp_path)


def test_workflow_deadline_fails_the_run_and_stops_its_steps(tmp_path: Path) -> None:
    started = time.monotonic()
    phase, interp = run(workflow([{"name": "s", "template": "slow"}], [container("slow", "import time; time.sleep(60)")],
                                 activeDeadlineSeconds=1), tmp_path)
    assert phase == "Failed" and interp.results["s"].phase == "Stopped"
    assert time.monotonic() - started < 15
    assert "activeDeadlineSeconds=1 exceeded" in (tmp_path / "log.txt").read_text()


# -- RayJob resource templates -------------------------------------------------------------------

RECORD = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'spec': os.environ.get('SPEC')},"
          " open(os.path.join(sys.argv[1], 'record.json'), 'w')); sys.exit(int(os.environ.get('CODE', '0')))")


def rayjob_template(entrypoint: str, env_vars: dict[str, str], **resource: Any) -> dict[str, Any]:
    head = {"containers": [{"name": "ray-head", "image": "unused", "workingDir": "/home/jovyan",
                            "volumeMounts": [{"name": "workspace", "mountPath": "/home/jovyan"}]}],
            "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": "claim-a"}}]}
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"generateName": "j-"},
           "spec": {"entrypoint": entrypoint, "runtimeEnvYAML": yaml.safe_dump({"env_vars": env_vars}),
                    "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": head}}}}}
    return {"name": "sweep", "resource": {"action": "create", "setOwnerReference": True, "manifest": yaml.safe_dump(job),
                                          "successCondition": "status.jobStatus == SUCCEEDED",
                                          "failureCondition": "status.jobStatus in (FAILED, STOPPED)", **resource}}


def _entrypoint(code: str = RECORD) -> str:
    import shlex

    return shlex.join([PY, "-c", code, "/home/jovyan", "--name={{workflow.name}}"])


def test_rayjob_entrypoint_runs_here_with_its_runtime_env(tmp_path: Path) -> None:
    hostile = '{"a": "$(touch pwned); `id` \\u007b\\u007b"}'
    manifest = workflow([{"name": "sweep", "template": "sweep"}], [rayjob_template(_entrypoint(), {"SPEC": hostile})])
    check_local_manifest(manifest)
    phase, interp = run(manifest, tmp_path)
    assert phase == "Succeeded", interp.results["sweep"].message
    record = json.loads((tmp_path / "record.json").read_text())
    # the workspace mount is the local root; {{workflow.name}} was substituted; the env var arrived byte for byte
    assert record == {"argv": [str(tmp_path), "--name=t-abc"], "cwd": str(tmp_path), "spec": hostile}
    assert not (tmp_path / "pwned").exists()


def test_rayjob_failure_is_judged_by_the_failure_condition(tmp_path: Path) -> None:
    manifest = workflow([{"name": "sweep", "template": "sweep"}], [rayjob_template(_entrypoint(), {"CODE": "1"})])
    phase, interp = run(manifest, tmp_path)
    assert phase == "Failed"
    assert "failureCondition 'status.jobStatus in (FAILED, STOPPED)' holds (jobStatus=FAILED" in interp.results["sweep"].message


def test_rayjob_whose_status_no_condition_accepts_fails_with_a_reason(tmp_path: Path) -> None:
    template = rayjob_template(_entrypoint(), {}, successCondition="status.jobStatus == RUNNING", failureCondition="status.nope == x")
    phase, interp = run(workflow([{"name": "sweep", "template": "sweep"}], [template]), tmp_path)
    assert phase == "Failed" and "successCondition 'status.jobStatus == RUNNING' does not hold" in interp.results["sweep"].message


def test_rayjob_stop_ends_stopped(tmp_path: Path) -> None:
    manifest = workflow([{"name": "sweep", "template": "sweep"}], [rayjob_template(_entrypoint("import time; time.sleep(60)"), {})])
    interp = WorkflowInterpreter(manifest, workflow_name="t-x", root=tmp_path, run_dir=tmp_path / "run",
                                 log_file=open(tmp_path / "l", "ab"))
    threading.Timer(1.0, interp.stop).start()
    assert interp.run() == "Stopped" and interp.results["sweep"].phase == "Stopped"


@pytest.mark.parametrize(("entrypoint", "message"), [
    ("python -m x --spec-json \"$SPEC\"", r"expands variables or commands \(\$, `\)"),
    ("python -m x `id`", r"expands variables or commands"),
    ("python -m x; rm -rf /", r"shell operators"),
    ("python -m x | tee log", r"shell operators"),
    ("python -m x 'unterminated", r"cannot be split"),
    ("  ", r"has no entrypoint"),
])
def test_entrypoints_that_need_a_shell_are_refused(entrypoint: str, message: str) -> None:
    with pytest.raises(ExecutionError, match=message):
        entrypoint_argv(entrypoint)


def test_quoted_operators_are_plain_arguments() -> None:
    assert entrypoint_argv("python -m x --root '/home/a b;c' \"x|y\"") == ["python", "-m", "x", "--root", "/home/a b;c", "x|y"]


PIP_RAYJOB = "apiVersion: ray.io/v1\nkind: RayJob\nspec: {entrypoint: x, runtimeEnvYAML: 'pip: [requests]'}\n"


@pytest.mark.parametrize(("manifest", "message"), [
    (workflow([{"name": "a", "template": "x", "withParam": "[1]"}], [container("x", "pass")]), "not withParam"),
    (workflow([{"name": "a", "template": "r"}], [{"name": "r", "resource": {"action": "create", "manifest": "apiVersion: v1\nkind: ConfigMap\n"}}]),
     "not v1 ConfigMap"),
    (workflow([{"name": "a", "template": "r"}], [{"name": "r", "resource": {"action": "delete", "manifest": "kind: RayJob"}}]),
     "action 'create' only"),
    (workflow([{"name": "a", "template": "r"}], [{"name": "r", "resource": {"action": "create", "manifest": PIP_RAYJOB}}]),
     "env_vars only, not pip"),
    (workflow([{"name": "a", "template": "s"}], [{"name": "s", "script": {"image": "x", "source": "pass"}}]), "does not run script"),
])
def test_check_local_manifest_refuses_what_it_cannot_run(manifest: dict[str, Any], message: str) -> None:
    with pytest.raises(ExecutionError, match=message):
        check_local_manifest(manifest)


@pytest.mark.parametrize(("condition", "status", "holds"), [
    ("status.jobStatus == SUCCEEDED", {"jobStatus": "SUCCEEDED"}, True),
    ("status.jobStatus = SUCCEEDED", {"jobStatus": "FAILED"}, False),
    ("status.jobStatus in (FAILED, STOPPED)", {"jobStatus": "STOPPED"}, True),
    ("status.jobStatus in (FAILED, STOPPED)", {"jobStatus": "SUCCEEDED"}, False),
    ("status.jobStatus notin (FAILED, STOPPED)", {"jobStatus": "SUCCEEDED"}, True),
    ("status.jobStatus != FAILED", {}, True),
    ("status.succeeded > 0", {"succeeded": 1}, True),
    ("status.succeeded > 0", {"succeeded": 0}, False),
    ("status.jobStatus == SUCCEEDED, status.jobDeploymentStatus == Complete", {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Failed"}, False),
    ("status.jobStatus", {"jobStatus": "x"}, True),
    ("!status.jobStatus", {"jobStatus": "x"}, False),
    ("status.ready == true", {"ready": True}, True),
])
def test_conditions_read_as_argo_reads_them(condition: str, status: dict[str, Any], holds: bool) -> None:
    assert condition_holds(condition, {"status": status}) is holds


def test_a_condition_that_cannot_be_read_is_an_error() -> None:
    with pytest.raises(ExecutionError, match="cannot read the condition"):
        resource_phase({"successCondition": "status.a === b"}, {"status": {}})
