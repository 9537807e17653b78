"""The compiler: golden manifests, the step contract, GPUs and pools, retries, timeouts, errors.

Golden files live in ``golden/``; regenerate them after an intended change with
``NBSCALE_REGEN_GOLDEN=1 pytest tests/workflow_compiler/test_compiler.py`` and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_files import assert_matches_golden
from recorded_pods import captured

from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.compiler import compile_to_file, compile_workflow, to_yaml
from workflow_compiler.compiler import output as compiler_output
from workflow_compiler.compiler.templates import cpu_quantity
from workflow_compiler.errors import CompileError, ManifestInvalid, NotebookError
from workflow_compiler.inspection import inspect_notebook
from workflow_compiler.pools import PoolConfig, load_pools
from workflow_compiler.spec import PipelineSpec, RunSpec, build_run_spec, load_pipeline
from workflow_compiler.stepconfig import StepConfig
from workflow_compiler.validation import validate_workflow

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"

CUSTOM_CLUSTER = ClusterConfig(
    namespace="jupyterhub", service_account="nbscale-runner", mlflow_tracking_uri="http://mlflow.nbscale.svc:5000",
    default_image="registry.example.com:5000/ds/runner:1.2", pod_gc_strategy="OnWorkflowSuccess",
    archive_artifacts=True, artifact_repository_ref={"configMap": "artifact-repositories", "key": "minio"},
    limit_cpu=True, ttl_seconds_after_finished=86400, workspace_claim_template="home-{username}",
    workspace_mount="/home/user",
)
AMD_POOLS = PoolConfig.model_validate({"pools": {"mi300": {
    "node_selector": {"amd.com/gpu.product": "MI300X"}, "gpu_resource": "amd.com/gpu",
    "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60}],
}}})


@pytest.fixture(autouse=True)
def _no_site_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the built-in pools and cluster defaults unless they set the variables themselves."""
    monkeypatch.delenv("NBSCALE_POOLS", raising=False)
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)


def _train(*cli: str, **fields: Any) -> RunSpec:
    return build_run_spec("examples/train.ipynb", root=REPO, cli_parameters=cli, user="alice", **fields)


def _pipeline() -> PipelineSpec:
    return load_pipeline(REPO / "examples" / "pipeline.yaml", root=REPO).model_copy(update={"user": "alice"})


# name -> what to compile; the examples first, then one case per configuration axis.
GOLDEN_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "train-run": lambda: compile_workflow(_train()),
    "train-gpu-a100": lambda: compile_workflow(_train(
        "n_estimators=200", "model=boosting", resources={"gpus": 1, "pool": "a100", "cpu": 4, "memory": "16Gi"},
        retries=2, timeout_seconds=3600, tracking={"experiment": "wine", "tags": {"team": "ds"}})),
    "pipeline": lambda: compile_workflow(_pipeline()),
    "pipeline-queued": lambda: compile_workflow(_pipeline(), cluster=ClusterConfig(kueue_queue="vision")),
    "pipeline-captured-pod": lambda: compile_workflow(_pipeline(), cluster=ClusterConfig(service_account="nbscale-runner"),
                                                      pod_env=captured("jupyter-alice")),
    "train-gpu-captured-pod-pinned": lambda: compile_workflow(
        _train(resources={"gpus": 1, "pool": "t4"}).model_copy(update={"user": "bob"}), pod_env=captured("jupyter-bob", "ReadWriteOnce"),
        cluster=ClusterConfig(pin_steps_to_user_node=True, cpu_steps_inherit_placement=True)),
    "custom-cluster-amd": lambda: compile_workflow(
        _train("seed=7", resources={"gpus": 2, "pool": "mi300", "cpu": 0.5}, image="ghcr.io/acme/nb:2024.1",
               outputs={"html": False}),
        cluster=CUSTOM_CLUSTER, pools=AMD_POOLS),
    "hostile-values": lambda: compile_workflow(RunSpec(
        notebook="odd dir/{{workflow.name}} $(id).ipynb", user="Ève {{x}}@example.com",
        parameters={"cmd": '"; rm -rf /', "sub": "$(id)", "expr": "{{workflow.name}}", "nl": "a\nb",
                    "yaml": "key: [yaml]", "tag": "!!python/object", "nested": {"}}": ["{{", "}}"]}},
        tracking={"experiment": "exp {{workflow.uid}}", "tags": {"{{k}}": "$(v)\n"}})),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_manifest(name: str) -> None:
    """Each case compiles to exactly its committed YAML (regenerate with NBSCALE_REGEN_GOLDEN=1)."""
    text = to_yaml(GOLDEN_CASES[name]())
    path = GOLDEN / f"{name}.yaml"
    assert_matches_golden(path, text, produced_by="compiled")


def test_every_golden_file_is_a_case_and_validates() -> None:
    """No stale golden files, and each one on disk passes the strict CRD check."""
    files = sorted(GOLDEN.glob("*.yaml"))
    assert {f.stem for f in files} == set(GOLDEN_CASES)
    for file in files:
        validate_workflow(yaml.safe_load(file.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_compiled_manifest_validates_and_survives_yaml(name: str) -> None:
    manifest = GOLDEN_CASES[name]()
    validate_workflow(manifest)
    assert yaml.safe_load(to_yaml(manifest)) == manifest


def test_compilation_is_deterministic_across_processes() -> None:
    """Same spec, fresh interpreter with another hash seed: byte-identical YAML (no clocks, no randomness)."""
    code = ("from pathlib import Path; from workflow_compiler.spec import load_pipeline;"
            "from workflow_compiler.compiler import compile_workflow, to_yaml;"
            f"s = load_pipeline({str(REPO / 'examples/pipeline.yaml')!r}, root={str(REPO)!r}).model_copy(update={{'user': 'alice'}});"
            f"print(to_yaml(compile_workflow(s, notebook_root=Path({str(REPO)!r}))), end='')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBSCALE_")} | {"PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert other == to_yaml(compile_workflow(_pipeline(), notebook_root=REPO))
    assert "generateName: nbscale-wine-pipeline-" in other and "\n  name:" not in other.split("spec:")[0]


def _template(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in manifest["spec"]["templates"] if t["name"] == name)


def _args(template: dict[str, Any]) -> list[str]:
    return template["container"]["args"]


def _option(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


@pytest.mark.parametrize(("given", "expected"), [
    ([], {"model": "forest", "n_estimators": 100, "max_depth": None}),
    (["n_estimators=250", "max_depth=4"], {"model": "forest", "n_estimators": 300, "max_depth": 4}),
])
def test_argo_submit_p_reparameterizes_any_notebook_parameter(given: list[str], expected: dict[str, Any]) -> None:
    """`argo submit wf.yaml -p n_estimators=300` (simulated): Argo replaces the workflow argument's value,
    then substitutes it into the task and the step; the step receives it as JSON, and every default too."""
    from workflow_compiler.executors.templating import substitute

    manifest = compile_workflow(_train(*given), notebook_root=REPO)
    arguments = {p["name"]: p["value"] for p in manifest["spec"]["arguments"]["parameters"]}
    assert set(arguments) == {p.name for p in inspect_notebook(REPO / "examples" / "train.ipynb").parameters}
    arguments["n_estimators"] = "300"  # what -p does to spec.arguments.parameters
    (task,) = _template(manifest, "main")["dag"]["tasks"]
    inputs = {p["name"]: substitute(p["value"], {f"workflow.parameters.{k}": v for k, v in arguments.items()})
              for p in task["arguments"]["parameters"]}
    received = [substitute(a, {f"inputs.parameters.{k}": v for k, v in inputs.items()})
                for a in _option(_args(_template(manifest, task["template"])), "--parameter")]
    values = {name: json.loads(value) for name, value in (item.split("=", 1) for item in received)}
    assert {k: values[k] for k in expected} == {**expected, "n_estimators": 300}


def test_a_pipeline_has_every_parameter_of_every_step_as_step_dash_name() -> None:
    manifest = compile_workflow(_pipeline(), notebook_root=REPO)
    arguments = {p["name"]: json.loads(p["value"]) for p in manifest["spec"]["arguments"]["parameters"]}
    for step in ("prepare", "train"):
        notebook = REPO / "examples" / f"{step}.ipynb"
        assert {n.split("-", 1)[1] for n in arguments if n.startswith(f"{step}-")} == {p.name for p in inspect_notebook(notebook).parameters}
    assert arguments["train-n_estimators"] == 60 and arguments["train-report_steps"] == 5  # given, and a default
    assert arguments["prepare-test_size"] == 0.3


def test_run_follows_the_step_contract() -> None:
    """The command line and wiring the runtime and the local executor rely on (docs/DESIGN.md)."""
    spec = _train("n_estimators=300", "model=logistic")
    manifest = compile_workflow(spec, notebook_root=REPO)
    assert manifest["metadata"]["generateName"] == "nbscale-train-"
    assert manifest["spec"]["entrypoint"] == "main"
    # every notebook parameter, in the notebook's order: the given values, and the defaults for the rest (as JSON)
    names = ["model", "n_estimators", "max_depth", "learning_rate", "test_size", "seed", "data_dir", "report_steps"]
    values = ['"logistic"', "300", "null", "0.1", "0.25", "42", '""', "5"]
    assert manifest["spec"]["arguments"]["parameters"] == [{"name": n, "value": v} for n, v in zip(names, values, strict=True)]
    (task,) = _template(manifest, "main")["dag"]["tasks"]
    assert task["arguments"]["parameters"] == [{"name": n, "value": f"{{{{workflow.parameters.{n}}}}}"} for n in names]
    step = _template(manifest, task["template"])
    container = step["container"]
    assert container["command"] == ["nbscale-step"]
    args = _args(step)
    assert args[0] == "run" and _option(args, "--output-dir") == ["/nbscale/outputs"]
    assert _option(args, "--parameter") == [f"{n}={{{{inputs.parameters.{n}}}}}" for n in names]
    config = StepConfig.from_arg(_option(args, "--config")[0])
    sha = hashlib.sha256((REPO / "examples/train.ipynb").read_bytes()).hexdigest()
    assert config == StepConfig(notebook="examples/train.ipynb", experiment="train", user="alice", notebook_sha256=sha,
                                image="nbscale/singleuser:0.1.0", html=True, step=None)
    assert container["workingDir"] == "/home/jovyan"
    assert {"name": "workspace", "mountPath": "/home/jovyan"} in container["volumeMounts"]
    assert manifest["spec"]["volumes"] == [{"name": "workspace", "persistentVolumeClaim": {"claimName": "claim-alice"}}]
    assert {"name": "outputs", "emptyDir": {}} in step["volumes"]
    assert {"name": "NBSCALE_WORKFLOW_NAME", "value": "{{workflow.name}}"} in container["env"]
    assert [a["name"] for a in step["outputs"]["artifacts"]] == ["notebook", "html"]
    assert manifest["spec"]["podGC"] == {"strategy": "OnPodCompletion"}
    assert manifest["metadata"]["labels"] == {"nbscale.io/user": "alice", "nbscale.io/notebook": "examples.train.ipynb",
                                              "nbscale.io/kind": "run"}


def test_pipeline_opens_a_parent_run_and_feeds_its_id_to_every_step() -> None:
    manifest = compile_workflow(_pipeline())
    spec = manifest["spec"]
    tasks = {t["name"]: t for t in _template(manifest, "main")["dag"]["tasks"]}
    assert list(tasks) == ["mlflow-parent", "prepare", "train"]
    assert tasks["mlflow-parent"]["template"] == "open-parent-run"
    assert tasks["prepare"]["dependencies"] == ["mlflow-parent"]
    assert tasks["train"]["dependencies"] == ["mlflow-parent", "prepare"]
    names = [p["name"] for p in spec["arguments"]["parameters"]]
    assert names == ["prepare-data_dir", "prepare-test_size", "train-data_dir", "train-model", "train-n_estimators"]
    feeds = {p["name"]: p["value"] for p in tasks["train"]["arguments"]["parameters"]}
    assert feeds["model"] == "{{workflow.parameters.train-model}}"
    assert feeds["parent-run-id"] == "{{tasks.mlflow-parent.outputs.parameters.run-id}}"
    train = _template(manifest, "notebook-train")
    assert _option(_args(train), "--parent-run-id") == ["{{inputs.parameters.parent-run-id}}"]
    assert StepConfig.from_arg(_option(_args(train), "--config")[0]).step == "train"
    opener = _template(manifest, "open-parent-run")
    assert _args(opener)[0] == "open-parent" and _option(_args(opener), "--output-dir") == ["/nbscale/outputs"]
    assert opener["outputs"]["parameters"] == [{"name": "run-id", "valueFrom": {"path": "/nbscale/outputs/run-id"},
                                                "globalName": "mlflow-parent-run-id"}]
    assert spec["onExit"] == "close-parent-run"
    assert _args(_template(manifest, "close-parent-run")) == [
        "close-parent", "--run-id", "{{workflow.outputs.parameters.mlflow-parent-run-id}}", "--workflow-status", "{{workflow.status}}"]
    assert manifest["metadata"]["labels"]["nbscale.io/kind"] == "pipeline"
    assert train["container"]["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}


def test_gpus_become_limits_with_the_pool_selector_and_tolerations() -> None:
    step = _template(compile_workflow(_train(resources={"gpus": 2, "pool": "a100"})), "notebook")
    assert step["container"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert step["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert step["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gpus_without_a_pool_use_the_default_pool_and_cpu_runs_use_none() -> None:
    gpu = _template(compile_workflow(_train(resources={"gpus": 1})), "notebook")
    assert "nodeSelector" not in gpu and gpu["tolerations"][0]["key"] == "nvidia.com/gpu"
    cpu = _template(compile_workflow(_train()), "notebook")
    assert not {"nodeSelector", "tolerations"} & set(cpu)
    assert cpu["container"]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}


def test_a_pool_without_gpus_still_places_the_pod_but_requests_no_gpu() -> None:
    step = _template(compile_workflow(_train(resources={"pool": "t4"})), "notebook")
    assert step["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert "nvidia.com/gpu" not in step["container"]["resources"]["limits"]


def test_custom_gpu_resource_name_and_cluster_settings() -> None:
    manifest = GOLDEN_CASES["custom-cluster-amd"]()
    step = _template(manifest, "notebook")
    resources = step["container"]["resources"]
    assert resources == {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "500m", "memory": "2Gi", "amd.com/gpu": "2"}}
    assert step["tolerations"][1] == {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 60}
    assert manifest["metadata"]["namespace"] == "jupyterhub"
    assert manifest["spec"]["serviceAccountName"] == "nbscale-runner"
    assert manifest["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "home-alice"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.nbscale.svc:5000"} in step["container"]["env"]
    assert step["container"]["workingDir"] == "/home/user"
    assert [a["name"] for a in step["outputs"]["artifacts"]] == ["notebook"]
    assert "archive" not in step["outputs"]["artifacts"][0]
    assert manifest["spec"]["artifactRepositoryRef"] == {"configMap": "artifact-repositories", "key": "minio"}
    assert manifest["spec"]["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert step["container"]["image"] == "ghcr.io/acme/nb:2024.1"


def test_unknown_pool_is_a_compile_error_naming_the_known_pools() -> None:
    with pytest.raises(CompileError, match=r"Unknown GPU pool 'v100'\. Known pools: a100, a10g, gpu, h100, t4"):
        compile_workflow(_train(resources={"gpus": 1, "pool": "v100"}))


def test_pools_come_from_the_environment_when_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("pools:\n  v100:\n    node_selector: {gpu: v100}\n", encoding="utf-8")
    monkeypatch.setenv("NBSCALE_POOLS", str(pools))
    step = _template(compile_workflow(_train(resources={"gpus": 1, "pool": "v100"})), "notebook")
    assert step["nodeSelector"] == {"gpu": "v100"}
    with pytest.raises(CompileError, match="Known pools: v100"):
        compile_workflow(_train(resources={"gpus": 1, "pool": "a100"}))


def test_cluster_config_comes_from_the_environment_when_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text("namespace: team-a\nmlflow_tracking_uri: http://mlflow:5000\n", encoding="utf-8")
    monkeypatch.setenv("NBSCALE_CLUSTER_CONFIG", str(config))
    manifest = compile_workflow(_train())
    assert manifest["metadata"]["namespace"] == "team-a"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in _template(manifest, "notebook")["container"]["env"]


@pytest.mark.parametrize("retries", [0, 1, 10])
def test_retries_become_a_retry_strategy(retries: int) -> None:
    step = _template(compile_workflow(_train(retries=retries)), "notebook")
    assert step.get("retryStrategy") == ({"limit": retries} if retries else None)


@pytest.mark.parametrize("timeout", [None, 1, 604800])
def test_timeout_becomes_the_active_deadline_and_reaches_the_runtime(timeout: int | None) -> None:
    step = _template(compile_workflow(_train(timeout_seconds=timeout)), "notebook")
    assert step.get("activeDeadlineSeconds") == timeout
    assert StepConfig.from_arg(_option(_args(step), "--config")[0]).timeout_seconds == timeout


@pytest.mark.parametrize(("cores", "quantity"), [(1.0, "1"), (4, "4"), (0.5, "500m"), (2.25, "2250m"), (0.1, "100m"), (0.0001, "1m"), (1.0005, "1001m")])
def test_cpu_quantities(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


def test_notebook_hash_needs_a_readable_notebook_inside_the_root(tmp_path: Path) -> None:
    text = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    (tmp_path / "nb.ipynb").write_bytes(text)
    config = _option(_args(_template(compile_workflow(RunSpec(notebook="nb.ipynb", user="u"), notebook_root=tmp_path), "notebook")), "--config")
    assert StepConfig.from_arg(config[0]).notebook_sha256 == hashlib.sha256(text).hexdigest()
    with pytest.raises(NotebookError, match="missing.ipynb"):
        compile_workflow(RunSpec(notebook="missing.ipynb", user="u"), notebook_root=tmp_path)
    (tmp_path / "link.ipynb").symlink_to(REPO / "examples" / "train.ipynb")
    with pytest.raises(NotebookError, match="outside the working directory"):
        compile_workflow(RunSpec(notebook="link.ipynb", user="u"), notebook_root=tmp_path)


@pytest.mark.parametrize("image", ["{{workflow.name}}", "Upper/Case", "a:b:c", "x@sha256:123", "-lead"])
def test_images_must_be_plain_references(image: str) -> None:
    with pytest.raises(CompileError, match="is not a container image reference"):
        compile_workflow(RunSpec(notebook="a.ipynb", user="u", image=image))


@pytest.mark.parametrize("image", ["python:3.11", "ghcr.io/a/b/c:v1.2-rc_3", "localhost:5000/x",
                                   "quay.io/jupyter/scipy-notebook@sha256:" + "a" * 64, "my_org/nb__x:latest"])
def test_valid_images_are_kept(image: str) -> None:
    manifest = compile_workflow(RunSpec(notebook="a.ipynb", user="u", image=image))
    assert _template(manifest, "notebook")["container"]["image"] == image
    validate_workflow(manifest)


def test_names_argo_cannot_take_are_compile_errors() -> None:
    with pytest.raises(CompileError, match="'café'.*ASCII"):
        compile_workflow(RunSpec(notebook="a.ipynb", user="u", parameters={"café": 1}))
    steps = [{"name": "1-prep", "notebook": "a.ipynb"}]
    with pytest.raises(CompileError, match="cannot start with a digit"):
        compile_workflow(PipelineSpec(name="p", user="u", steps=steps))
    with pytest.raises(CompileError, match="reserved"):
        compile_workflow(PipelineSpec(name="p", user="u", steps=[{"name": "mlflow-parent", "notebook": "a.ipynb"}]))
    with pytest.raises(CompileError, match="'x' cannot be sent as JSON"):
        compile_workflow(RunSpec(notebook="a.ipynb", user="u", parameters={"x": float("nan")}))


def test_compile_to_file_writes_validated_yaml(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "wf.yaml"
    text = compile_to_file(_train("n_estimators=200"), out, True)
    assert out.read_text(encoding="utf-8") == text
    assert text.startswith("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n")
    assert compile_to_file(_train("n_estimators=200"), None, False) == text
    assert [p.name for p in out.parent.iterdir()] == ["wf.yaml"]


def test_compile_to_file_writes_into_a_pipe_or_device_instead_of_replacing_it(tmp_path: Path) -> None:
    """``-o /dev/null`` once put a regular file in place of the device (a rename, run as root)."""
    import stat
    import threading

    pipe = tmp_path / "manifest.fifo"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    text = compile_to_file(_train(), pipe, True)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(pipe.stat().st_mode) and received == [text.encode("utf-8")]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.fifo"]  # no temporary file left beside it


def test_compile_to_file_refuses_an_invalid_manifest_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = compiler_output.compile_workflow

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["podGC"]["stratgy"] = "Never"
        return manifest

    monkeypatch.setattr(compiler_output, "compile_workflow", broken)
    out = tmp_path / "wf.yaml"
    with pytest.raises(ManifestInvalid, match=r"spec\.podGC\.stratgy: unknown field"):
        compile_to_file(_train(), out, True)
    assert not out.exists()
    assert "stratgy" in compile_to_file(_train(), out, False)  # without --validate it is written as asked


def test_unknown_spec_types_are_refused() -> None:
    with pytest.raises(CompileError, match="cannot compile a dict"):
        compile_workflow({"notebook": "a.ipynb"})  # type: ignore[arg-type]


def test_to_yaml_puts_identity_first_and_keeps_long_strings_on_one_line() -> None:
    manifest = compile_workflow(_train(tracking={"experiment": "x" * 250}))
    text = to_yaml(manifest)
    assert list(yaml.safe_load(text)) == ["apiVersion", "kind", "metadata", "spec"]
    config_line = next(line for line in text.splitlines() if '"experiment"' in line)
    assert json.loads(yaml.safe_load(config_line.strip()[2:]))["experiment"] == "x" * 250
    assert load_pools().get("a100").gpu_resource == "nvidia.com/gpu"


def test_to_yaml_orders_keys_and_writes_a_shared_object_out_in_full() -> None:
    """The dumper orders keys itself (no reordered copy), and a dict a caller's manifest shares gets no anchor."""
    shared = {"name": "x", "value": "1"}
    manifest = {"spec": {"b": [shared], "a": [shared]}, "kind": "Workflow", "apiVersion": "argoproj.io/v1alpha1"}
    text = to_yaml(manifest)
    assert "&" not in text and "*" not in text
    assert text.splitlines()[:4] == ["apiVersion: argoproj.io/v1alpha1", "kind: Workflow", "spec:", "  a:"]
    assert yaml.safe_load(text) == manifest
