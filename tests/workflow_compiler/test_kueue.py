"""The Kueue generator: golden objects, strict v1beta2 validation, the Helm values contract, refusals.

Golden files live in ``golden/kueue/``; regenerate with ``NBSCALE_REGEN_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from golden_files import assert_matches_golden

from workflow_compiler import cli
from workflow_compiler.errors import CompileError, ManifestInvalid
from workflow_compiler.kueue import TeamsConfig, kueue_objects, kueue_values, load_teams, render_kueue
from workflow_compiler.pools import PoolConfig, load_pools
from workflow_compiler.validation import kueue_violations, validate_kueue

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "kueue"
EXAMPLE = REPO / "examples" / "kueue-teams.yaml"
AMD_POOLS = PoolConfig.model_validate({"pools": {
    "mi300": {"node_selector": {"amd.com/gpu.product": "MI300X"}, "gpu_resource": "amd.com/gpu",
              "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "a100": {"node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
}})
MIXED_TEAMS = TeamsConfig.model_validate({"cohort": "lab", "cpu_flavor": "general", "teams": [
    {"name": "team-a", "namespaces": ["jhub"], "nominal": {"cpu": 8.5, "memory": "32Gi", "gpus": {"mi300": 2}}},
    {"name": "team-b", "namespaces": ["jhub", "batch"], "nominal": {"gpus": {"a100": 1}},
     "borrowing_limit": {"cpu": 0, "gpus": {"a100": 0, "mi300": 2}}},
]})

CASES = {
    "example-builtin-pools": lambda: (load_teams(EXAMPLE), load_pools()),
    "mixed-vendors": lambda: (MIXED_TEAMS, AMD_POOLS),
}


@pytest.fixture(autouse=True)
def _no_site_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_POOLS", raising=False)


@pytest.mark.parametrize(("name", "fmt"), [(n, f) for n in sorted(CASES) for f in ("manifests", "helm-values")])
def test_golden(name: str, fmt: str) -> None:
    text = render_kueue(*CASES[name](), fmt)  # type: ignore[arg-type]
    path = GOLDEN / f"{name}.{fmt}.yaml"
    assert_matches_golden(path, text, produced_by="generated")


def test_every_golden_object_validates_strictly() -> None:
    files = sorted(GOLDEN.glob("*.manifests.yaml"))
    assert {f.name.removesuffix(".manifests.yaml") for f in files} == set(CASES)
    for file in files:
        objects = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        assert objects and all(kueue_violations(o) == [] for o in objects)


def test_helm_values_follow_the_chart_contract() -> None:
    """The shape the helm engineer's template renders: name/spec (and namespace for LocalQueues) only."""
    values = yaml.safe_load(render_kueue(load_teams(EXAMPLE), load_pools(), "helm-values"))
    assert list(values) == ["kueue"]
    block = values["kueue"]
    assert list(block) == ["enabled", "resourceFlavors", "clusterQueues", "localQueues"] and block["enabled"] is True
    assert all(set(f) == {"name", "spec"} for f in block["resourceFlavors"] + block["clusterQueues"])
    assert all(set(q) == {"name", "namespace", "spec"} for q in block["localQueues"])
    assert [(q["name"], q["namespace"]) for q in block["localQueues"]] == [("vision", "jhub"), ("nlp", "jhub"), ("nlp", "nlp-batch")]
    # the manifests are exactly the values, wrapped in apiVersion/kind/metadata
    objects = kueue_objects(load_teams(EXAMPLE), load_pools())
    assert [o["spec"] for o in objects] == [i["spec"] for k in ("resourceFlavors", "clusterQueues", "localQueues") for i in block[k]]


def test_flavors_quotas_and_cohort() -> None:
    objects = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")): o for o in kueue_objects(MIXED_TEAMS, AMD_POOLS)}
    assert objects[("ResourceFlavor", "mi300", None)]["spec"] == {
        "nodeLabels": {"amd.com/gpu.product": "MI300X"},
        "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    assert objects[("ResourceFlavor", "general", None)]["spec"] == {}
    queue = objects[("ClusterQueue", "team-b", None)]["spec"]
    assert queue["cohortName"] == "lab"
    assert queue["namespaceSelector"]["matchExpressions"][0]["values"] == ["jhub", "batch"]
    cpu_group, gpu_group = queue["resourceGroups"]
    assert cpu_group["flavors"][0]["resources"] == [{"name": "cpu", "nominalQuota": "0", "borrowingLimit": "0"},
                                                    {"name": "memory", "nominalQuota": "0"}]
    assert gpu_group["coveredResources"] == ["amd.com/gpu", "nvidia.com/gpu"]
    by_flavor = {f["name"]: f["resources"] for f in gpu_group["flavors"]}
    assert by_flavor["a100"] == [{"name": "amd.com/gpu", "nominalQuota": 0},
                                 {"name": "nvidia.com/gpu", "nominalQuota": 1, "borrowingLimit": 0}]
    assert by_flavor["mi300"] == [{"name": "amd.com/gpu", "nominalQuota": 0, "borrowingLimit": 2},
                                  {"name": "nvidia.com/gpu", "nominalQuota": 0}]
    assert objects[("ClusterQueue", "team-a", None)]["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0] == {
        "name": "cpu", "nominalQuota": "8500m"}
    assert objects[("LocalQueue", "team-b", "batch")]["spec"] == {"clusterQueue": "team-b"}


def test_a_queue_named_default_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="cannot be named 'default'.*without a queue label.*hub's own pods"):
        TeamsConfig.model_validate({"cohort": "c", "teams": [{"name": "default", "namespaces": ["jhub"]}]})


def test_the_default_refusal_reaches_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teams = tmp_path / "teams.yaml"
    teams.write_text("cohort: c\nteams: [{name: default, namespaces: [jhub]}]\n")
    assert cli.main(["cluster", "kueue", "--teams", str(teams)]) == 1
    assert "cannot be named 'default'" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(("teams", "pools", "message"), [
    ({"cohort": "c", "teams": [{"name": "a", "namespaces": ["x"], "nominal": {"gpus": {"v100": 1}}}]}, None,
     "unknown pool.*v100.*known pools: a100, a10g, gpu, h100, t4"),
    ({"cohort": "c", "cpu_flavor": "a100", "teams": [{"name": "a", "namespaces": ["x"]}]}, None, "also a GPU pool"),
])
def test_teams_that_do_not_fit_the_pools_are_refused(teams: dict[str, Any], pools: Any, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        kueue_objects(TeamsConfig.model_validate(teams), pools or load_pools())


@pytest.mark.parametrize(("teams", "message"), [
    ({"cohort": "c", "teams": []}, "at least 1"),
    ({"cohort": "c", "teams": [{"name": "a", "namespaces": ["x"]}, {"name": "a", "namespaces": ["y"]}]}, "repeated: a"),
    ({"cohort": "C", "teams": [{"name": "a", "namespaces": ["x"]}]}, "not a DNS-1123 label"),
    ({"cohort": "c", "teams": [{"name": "a", "namespaces": ["Bad_NS"]}]}, "namespace 'Bad_NS'"),
    ({"cohort": "c", "teams": [{"name": "a", "namespaces": ["x"], "nominal": {"memory": "lots"}}]}, "memory"),
    ({"cohort": "c", "teams": [{"name": "a", "namespaces": ["x"], "nominal": {"gpus": {"a100": -1}}}]}, "negative"),
])
def test_bad_teams_files(teams: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TeamsConfig.model_validate(teams)


@pytest.mark.parametrize(("change", "where"), [
    (lambda o: o["spec"].update(cohort="lab"), "spec.cohort: unknown field"),  # the v1beta1 spelling
    (lambda o: o.update(apiVersion="kueue.x-k8s.io/v1beta1"), "apiVersion: must be kueue.x-k8s.io/v1beta2"),
    (lambda o: o["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0].update(nominalQuota="lots"), "nominalQuota"),
])
def test_validation_catches_a_broken_cluster_queue(change: Any, where: str) -> None:
    queue = copy.deepcopy(next(o for o in kueue_objects(MIXED_TEAMS, AMD_POOLS) if o["kind"] == "ClusterQueue"))
    change(queue)
    with pytest.raises(ManifestInvalid, match=where):
        validate_kueue(queue)


def test_cli_prints_manifests_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cluster", "kueue", "--teams", str(EXAMPLE)]) == 0
    kinds = [o["kind"] for o in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ResourceFlavor"] * 6 + ["ClusterQueue"] * 2 + ["LocalQueue"] * 3
    assert cli.main(["cluster", "kueue", "--teams", str(EXAMPLE), "--format", "helm-values"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == kueue_values(load_teams(EXAMPLE), load_pools())
