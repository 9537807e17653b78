"""Compiled sweeps: the KubeRay RayJob form and the Argo fan-out form.

Golden files live in ``golden/sweeps/`` (regenerate with ``NBSCALE_REGEN_GOLDEN=1``). Hostile
values go through a real ``sh``: the RayJob entrypoint is run by a shell on the cluster, so the
test runs it by one too, with a stand-in ``python`` that records what it was given.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_files import assert_matches_golden
from recorded_pods import captured

from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.compiler import compile_workflow, to_yaml
from workflow_compiler.compiler.rayjob import SPEC_ENV, scale_quantity, worker_layout
from workflow_compiler.crd_schemas import RAYJOB_CRD, load_crd
from workflow_compiler.errors import CompileError, ManifestInvalid
from workflow_compiler.executors.templating import substitute_all
from workflow_compiler.pools import PoolConfig
from workflow_compiler.spec import RunSpec, build_run_spec
from workflow_compiler.sweep.spec import SweepSpec
from workflow_compiler.validation import validate_rayjob, validate_workflow

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "sweeps"
AMD_POOLS = PoolConfig.model_validate({"pools": {"mi300": {
    "node_selector": {"amd.com/gpu.product": "MI300X"}, "gpu_resource": "amd.com/gpu",
    "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}})
HOSTILE = ["{{workflow.name}}", "$(touch pwned)", "`id`", "'; rm -rf / #", '"', "a\nb", "}}{{", "!!python/object", "${HOME}"]


@pytest.fixture(autouse=True)
def _no_site_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_POOLS", raising=False)
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)


def _train_sweep(sweep: dict[str, Any], *cli: str, **fields: Any) -> RunSpec:
    spec = build_run_spec("examples/train.ipynb", root=REPO, cli_parameters=cli, user="alice", **fields)
    return spec.model_copy(update={"sweep": SweepSpec.model_validate(sweep)})


def _hostile_spec(search: str = "grid") -> RunSpec:
    space = {"choice_of": {"kind": "grid" if search == "grid" else "choice", "values": HOSTILE}}
    return RunSpec(notebook="odd dir/{{workflow.name}} $(id).ipynb", user="Ève {{x}}@example.com",
                   parameters={"cmd": '"; rm -rf /', "expr": "{{workflow.uid}}"},
                   tracking={"experiment": "exp {{workflow.uid}}", "tags": {"{{k}}": "$(v)\n"}},
                   sweep={"space": space, "metric": "acc", "mode": "max", "search": search})


GRID = {"space": {"n_estimators": "grid(50, 100)", "model": "grid('logistic', 'boosting')"}, "metric": "val_accuracy", "mode": "max",
        "search": "grid", "concurrency": 2}
GOLDEN_CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "train-rayjob-asha-half-gpu": lambda: compile_workflow(_train_sweep(
        {"space": {"n_estimators": "randint(50, 400)", "learning_rate": "loguniform(1e-3, 0.3)"}, "metric": "val_accuracy", "mode": "max",
         "samples": 24, "concurrency": 4, "search": "optuna", "scheduler": "asha", "gpus_per_trial": 0.5,
         "time_budget_s": 3600, "max_failures": 2}, "model=boosting", resources={"pool": "a100", "memory": "3Gi"})),
    "train-rayjob-custom-cluster-amd": lambda: compile_workflow(
        _train_sweep({**GRID, "gpus_per_trial": 2, "cpus_per_trial": 0.5}, resources={"pool": "mi300"}, image="ghcr.io/acme/nb:1"),
        cluster=ClusterConfig(namespace="jupyterhub", service_account="nbscale-runner", mlflow_tracking_uri="http://mlflow:5000",
                              limit_cpu=True, ttl_seconds_after_finished=86400, workspace_mount="/home/user"),
        pools=AMD_POOLS),
    "train-fanout-grid": lambda: compile_workflow(_train_sweep({**GRID, "samples": 2, "max_failures": 1, "time_budget_s": 600},
                                                               "data_dir=data/wine"), fanout=True),
    "hostile-rayjob": lambda: compile_workflow(_hostile_spec("random")),
    "train-rayjob-queued": lambda: compile_workflow(_train_sweep({**GRID, "gpus_per_trial": 1}, queue="vision")),
    "train-rayjob-captured-pod": lambda: compile_workflow(
        _train_sweep({**GRID, "gpus_per_trial": 1}, resources={"pool": "a100"}), pod_env=captured("jupyter-alice"),
        cluster=ClusterConfig(service_account="nbscale-runner", cpu_steps_inherit_placement=True)),
    "hostile-fanout": lambda: compile_workflow(_hostile_spec("grid"), fanout=True),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_sweep_manifest(name: str) -> None:
    """Each case compiles to exactly its committed YAML, which validates strictly (RayJob included)."""
    manifest = GOLDEN_CASES[name]()
    validate_workflow(manifest)
    text = to_yaml(manifest)
    path = GOLDEN / f"{name}.yaml"
    assert_matches_golden(path, text, produced_by="compiled")
    assert yaml.safe_load(text) == manifest


def test_every_sweep_golden_file_is_a_case() -> None:
    assert {f.stem for f in GOLDEN.glob("*.yaml")} == set(GOLDEN_CASES)


def _template(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in manifest["spec"]["templates"] if t["name"] == name)


def _rayjob(manifest: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(_template(manifest, "sweep")["resource"]["manifest"])


def _as_created(job: dict[str, Any]) -> dict[str, Any]:
    """The RayJob as Argo creates it: the run id label's expression filled from the Workflow's label."""
    return substitute_all(job, {"workflow.labels.nbscale.io/run-id": "nbs-0123456789", "workflow.name": "nbscale-train-x7k2p"})


def test_rayjob_form_creates_an_owned_rayjob_and_waits_on_its_job_status() -> None:
    manifest = GOLDEN_CASES["train-rayjob-asha-half-gpu"]()
    assert manifest["metadata"]["labels"]["nbscale.io/kind"] == "sweep"
    assert _template(manifest, "main")["dag"]["tasks"] == [{"name": "sweep", "template": "sweep"}]
    resource = _template(manifest, "sweep")["resource"]
    assert resource["action"] == "create" and resource["setOwnerReference"] is True
    assert resource["successCondition"] == "status.jobDeploymentStatus == Complete, status.jobStatus == SUCCEEDED"
    assert resource["failureCondition"] == ("status.jobDeploymentStatus in (Complete, Failed, ValidationFailed), "
                                            "status.jobStatus != SUCCEEDED")
    job = _rayjob(manifest)
    validate_rayjob(_as_created(job))
    assert job["metadata"]["labels"] == {"nbscale.io/user": "alice", "nbscale.io/notebook": "examples.train.ipynb", "nbscale.io/kind": "sweep",
                                         "nbscale.io/run-id": "{{workflow.labels.nbscale.io/run-id}}"}
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 300
    assert spec["activeDeadlineSeconds"] == 3600 + 1800
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0"} and "nodeSelector" not in head["template"]["spec"]
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    # 4 trials at once, half a GPU each: two trials share each worker's one GPU.
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (2, 2, 2)
    assert workers["rayStartParams"] == {"num-cpus": "2", "num-gpus": "1"}
    pod = workers["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "6Gi", "nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["volumes"] == [{"name": "workspace", "persistentVolumeClaim": {"claimName": "claim-alice"}}]
    assert {"name": "NBSCALE_HOME", "value": "/home/jovyan/.nbscale"} in container["env"]


def test_rayjob_status_conditions_name_kuberay_fields_and_ray_job_states() -> None:
    """The conditions read a field the vendored CRD declares, with values Ray's JobStatus can take."""
    from ray.job_submission import JobStatus

    crd = load_crd(RAYJOB_CRD)
    status = crd.schemas["v1"]["properties"]["status"]["properties"]
    assert status["jobStatus"]["type"] == "string"
    assert {"SUCCEEDED", "FAILED", "STOPPED"} <= {s.value for s in JobStatus}
    assert {s.value for s in JobStatus if s.is_terminal()} == {"SUCCEEDED", "FAILED", "STOPPED"}


def test_the_spec_reaches_the_driver_whole_through_the_runtime_env() -> None:
    spec = _train_sweep({**GRID, "max_failures": 3}, "model=boosting")
    job = _rayjob(compile_workflow(spec))
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert RunSpec.model_validate(json.loads(env_vars[SPEC_ENV])) == spec
    assert shlex.split(job["spec"]["entrypoint"]) == ["python", "-m", "workflow_compiler.sweep", "--spec-env", SPEC_ENV,
                                                      "--root", "/home/jovyan", "--no-progress", "--json"]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


@pytest.mark.parametrize("fanout", [False, True])
def test_hostile_values_form_no_argo_expression(fanout: bool) -> None:
    """Only expressions the compiler writes appear, in the Workflow and inside the embedded RayJob."""
    manifest = compile_workflow(_hostile_spec("grid" if fanout else "random"), fanout=fanout)
    validate_workflow(manifest)
    texts = list(_strings(manifest))
    if not fanout:
        job = _rayjob(manifest)
        texts += list(_strings(job)) + list(_strings(yaml.safe_load(job["spec"]["runtimeEnvYAML"])))
    found = {m for text in texts for m in re.findall(r"\{\{.*?\}\}", text, re.DOTALL)}
    allowed = {"{{workflow.name}}", "{{workflow.status}}", "{{workflow.outputs.parameters.mlflow-parent-run-id}}",
               "{{tasks.mlflow-parent.outputs.parameters.run-id}}", "{{inputs.parameters.parent-run-id}}",
               "{{item.choice_of}}", "{{inputs.parameters.choice_of}}", "{{workflow.parameters.cmd}}",
               "{{workflow.parameters.expr}}", "{{inputs.parameters.cmd}}", "{{inputs.parameters.expr}}",
               "{{workflow.labels.nbscale.io/run-id}}"}
    assert found <= allowed, found - allowed
    if fanout:
        items = _template(manifest, "main")["dag"]["tasks"][1]["withItems"]
        assert [json.loads(item["choice_of"]) for item in items] == HOSTILE


def _stand_in_python(folder: Path) -> Path:
    """A ``python`` that records its arguments and the spec variable, then exits 0."""
    script = folder / "python"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"json.dump({{'argv': sys.argv[1:], 'spec': os.environ.get({SPEC_ENV!r})}}, open(os.environ['RECORD'], 'w'))\n")
    script.chmod(0o755)
    return script


def test_hostile_values_reach_the_driver_literally_through_a_real_shell(tmp_path: Path) -> None:
    """Ray runs the entrypoint with a shell: run it with ``sh -c`` and the runtime env, as Ray would."""
    mount = "/home/x y;$(touch pwned)`touch pwned2`"
    spec = _hostile_spec("random")
    job = _rayjob(compile_workflow(spec, cluster=ClusterConfig(workspace_mount=mount)))
    validate_rayjob(_as_created(job))  # the masked check also passes on the RayJob Argo creates
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    _stand_in_python(tmp_path)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "RECORD": str(tmp_path / "record.json"), **env_vars}
    subprocess.run(["sh", "-c", job["spec"]["entrypoint"]], cwd=tmp_path, env=env, check=True, timeout=60)
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["argv"] == ["-m", "workflow_compiler.sweep", "--spec-env", SPEC_ENV, "--root", mount, "--no-progress", "--json"]
    assert RunSpec.model_validate(json.loads(record["spec"])) == spec
    assert not list(tmp_path.glob("pwned*"))
    benign = _rayjob(compile_workflow(_train_sweep(GRID), cluster=ClusterConfig(workspace_mount=mount)))
    assert job["spec"]["entrypoint"] == benign["spec"]["entrypoint"]  # no part of the spec is in the command line


def test_embedded_rayjob_is_checked_strictly() -> None:
    manifest = GOLDEN_CASES["train-rayjob-asha-half-gpu"]()
    job = _rayjob(manifest)
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicaz"] = 2
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    index = manifest["spec"]["templates"].index(_template(manifest, "sweep"))
    manifest["spec"]["templates"][index]["resource"]["manifest"] = yaml.safe_dump(job)
    with pytest.raises(ManifestInvalid) as caught:
        validate_workflow(manifest)
    paths = {e["path"] for e in caught.value.errors}
    where = f"spec.templates[{index}].resource.manifest.spec"
    assert f"{where}.rayClusterSpec.workerGroupSpecs[0].replicaz" in paths
    assert f"{where}.shutdownAfterJobFinishes" in paths


@pytest.mark.parametrize(("sweep", "expected"), [
    # concurrency, gpus/trial, cpus/trial, trials -> replicas, trials/worker, cpus, gpus, memory (2Gi per trial)
    ({"concurrency": 4, "gpus_per_trial": 0.5}, (2, 2, 2.0, 1, "4Gi")),
    ({"concurrency": 3, "gpus_per_trial": 0.5}, (2, 2, 2.0, 1, "4Gi")),
    ({"concurrency": 1, "gpus_per_trial": 0.5}, (1, 1, 1.0, 1, "2Gi")),
    ({"concurrency": 6, "gpus_per_trial": 0.3}, (2, 3, 3.0, 1, "6Gi")),
    ({"concurrency": 3, "gpus_per_trial": 2}, (3, 1, 1.0, 2, "2Gi")),
    ({"concurrency": 4, "gpus_per_trial": 0, "cpus_per_trial": 0.5}, (4, 1, 0.5, 0, "2Gi")),
    ({"concurrency": 8, "samples": 3}, (3, 1, 1.0, 0, "2Gi")),  # never more slots than trials
])
def test_worker_layout(sweep: dict[str, Any], expected: tuple[Any, ...]) -> None:
    spec = SweepSpec.model_validate({"space": {"x": "uniform(0, 1)"}, "metric": "m", "mode": "max", **sweep})
    layout = worker_layout(spec, "2Gi")
    assert (layout.replicas, layout.trials_per_worker, layout.cpus, layout.gpus, layout.memory) == expected


@pytest.mark.parametrize(("quantity", "factor", "expected"), [("2Gi", 2, "4Gi"), ("1.5Gi", 3, "4.5Gi"), ("512Mi", 1, "512Mi"),
                                                              ("500M", 4, "2000M"), ("0.25Gi", 4, "1Gi"), ("3", 2, "6")])
def test_scale_quantity(quantity: str, factor: int, expected: str) -> None:
    assert scale_quantity(quantity, factor) == expected


def test_fanout_items_are_the_grid_as_step_json_at_concurrency() -> None:
    manifest = GOLDEN_CASES["train-fanout-grid"]()
    main = _template(manifest, "main")
    assert main["parallelism"] == 2 and manifest["spec"]["onExit"] == "close-parent-run"
    assert manifest["spec"]["activeDeadlineSeconds"] == 600
    parent, trials = main["dag"]["tasks"]
    assert parent == {"name": "mlflow-parent", "template": "open-parent-run"}
    assert trials["dependencies"] == ["mlflow-parent"] and trials["template"] == "trial"
    points = [(json.loads(i["n_estimators"]), json.loads(i["model"])) for i in trials["withItems"]]
    grid = [(n, m) for n in (50, 100) for m in ("logistic", "boosting")]
    assert sorted(points) == sorted(grid * 2) and len(points) == 8
    feeds = {p["name"]: p["value"] for p in trials["arguments"]["parameters"]}
    assert feeds == {"data_dir": "{{workflow.parameters.data_dir}}", "n_estimators": "{{item.n_estimators}}",
                     "model": "{{item.model}}", "parent-run-id": "{{tasks.mlflow-parent.outputs.parameters.run-id}}"}
    assert manifest["spec"]["arguments"]["parameters"] == [{"name": "data_dir", "value": '"data/wine"'}]
    trial = _template(manifest, "trial")
    assert trial["retryStrategy"] == {"limit": 1}
    assert "--parent-run-id" in trial["container"]["args"]


def test_fanout_crosses_choice_in_a_grid_search() -> None:
    """search 'grid' enumerates choice(...) like grid(...): fan-out runs every combination."""
    crossed = {**GRID, "space": {"n_estimators": "grid(50, 100)", "model": "choice('logistic', 'boosting')"}}
    trials = _template(compile_workflow(_train_sweep(crossed), fanout=True), "main")["dag"]["tasks"][1]
    points = [(json.loads(i["n_estimators"]), json.loads(i["model"])) for i in trials["withItems"]]
    assert points == [(n, m) for n in (50, 100) for m in ("logistic", "boosting")]


def test_fanout_is_chosen_by_the_cluster_config() -> None:
    spec = _train_sweep(GRID)
    manifest = compile_workflow(spec, cluster=ClusterConfig(sweep_fanout=True))
    assert "withItems" in _template(manifest, "main")["dag"]["tasks"][1]
    assert "resource" in _template(compile_workflow(spec, cluster=ClusterConfig(sweep_fanout=True), fanout=False), "sweep")


@pytest.mark.parametrize(("sweep", "message"), [
    ({"space": {"n_estimators": "randint(50, 400)"}, "search": "random"}, "search 'random' samples, which needs Ray"),
    ({**GRID, "scheduler": "asha"}, "early stopping (asha) needs Ray Tune"),
    ({**GRID, "gpus_per_trial": 0.5}, "each fan-out trial is a pod, which takes whole GPUs"),
    ({**GRID, "space": {"n_estimators": "grid(50, 100)", "model": "choice('logistic', 'boosting')"}, "search": "random", "samples": 1},
     "space: model is sampled for each trial, which needs Ray; write grid(...) (or choice(...) with search 'grid')"),
])
def test_fanout_refuses_what_argo_cannot_do(sweep: dict[str, Any], message: str) -> None:
    with pytest.raises(CompileError, match=re.escape(message)):
        compile_workflow(_train_sweep({"metric": "val_accuracy", "mode": "max", **sweep}), fanout=True)


def test_a_huge_grid_is_refused_for_fanout() -> None:
    big = {"space": {"a": f"grid({', '.join(map(str, range(100)))})", "b": f"grid({', '.join(map(str, range(100)))})"},
           "metric": "m", "mode": "max", "search": "grid"}
    spec = RunSpec(notebook="nb.ipynb", user="u", sweep=big)
    with pytest.raises(CompileError, match="10000 trials; fan-out takes at most 5000"):
        compile_workflow(spec, fanout=True)
    validate_workflow(compile_workflow(spec))  # the RayJob form takes it
