"""helm/nbscale rendered by Helm's own engine: lint, golden renders, strict schemas, value contracts.

Golden renders live in ``golden/`` (regenerate with ``NBSCALE_REGEN_GOLDEN=1``, refused under ``CI``,
and review the diff). Built-in kinds are checked by kubernetes-validate in strict mode at the
chart's lowest supported Kubernetes; Kueue objects against Kueue's vendored CRDs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from golden_files import assert_matches_golden

from tests.helm.chart import CHART, KUBE_VERSION, NAMESPACE, VALUE_SETS, golden_text, manifests, render, validate_values
from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.crd_schemas import strict_validator
from workflow_compiler.pools import PoolConfig

GOLDEN = Path(__file__).parent / "golden"
KUEUE_CRDS = {
    "ResourceFlavor": "kueue/kueue.x-k8s.io_resourceflavors.yaml",
    "ClusterQueue": "kueue/kueue.x-k8s.io_clusterqueues.yaml",
    "LocalQueue": "kueue/kueue.x-k8s.io_localqueues.yaml",
}
SETS = pytest.mark.parametrize("name", sorted(VALUE_SETS))


@SETS
def test_lint_finds_no_errors_and_no_warnings(name: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], (serious, report["errors"])


@SETS
def test_render_matches_golden(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = golden_text(VALUE_SETS[name])
    assert_matches_golden(path, text, produced_by="rendered")


@SETS
def test_every_object_validates_strictly(name: str) -> None:
    objects = manifests(VALUE_SETS[name])
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("kueue.x-k8s.io/"):
            assert obj["apiVersion"] == "kueue.x-k8s.io/v1beta2"
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in strict_validator(KUEUE_CRDS[obj["kind"]], "v1beta2").iter_errors(obj)]
            assert not errors, (obj["kind"], obj["metadata"]["name"], errors)
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_strict_validation_catches_an_unknown_field() -> None:
    """The checks above can fail: a misspelt field in a Deployment and in a ClusterQueue is refused."""
    deployment = next(o for o in manifests({}) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    queue = next(o for o in manifests(VALUE_SETS["kueue"]) if o["kind"] == "ClusterQueue")
    queue["spec"]["cohort"] = "gpus"  # v1beta1's name; v1beta2 says cohortName
    assert list(strict_validator(KUEUE_CRDS["ClusterQueue"], "v1beta2").iter_errors(queue))


def _object(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@SETS
def test_config_maps_load_as_the_compilers_models(name: str) -> None:
    objects = manifests(VALUE_SETS[name])
    cluster = ClusterConfig.model_validate(yaml.safe_load(_object(objects, "ConfigMap", "nbscale-cluster-config")["data"]["cluster.yaml"]))
    PoolConfig.model_validate(yaml.safe_load(_object(objects, "ConfigMap", "nbscale-pools")["data"]["pools.yaml"]))
    assert cluster.namespace == NAMESPACE
    runner = _object(objects, "RoleBinding", "nbscale-runner")["subjects"][0]["name"]
    assert cluster.service_account == runner
    mlflow = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "nbscale-mlflow"]
    if mlflow:
        assert cluster.mlflow_tracking_uri == f"http://nbscale-mlflow.{NAMESPACE}.svc:{mlflow[0]['spec']['ports'][0]['port']}"
    else:
        assert cluster.mlflow_tracking_uri is None


def test_kueue_specs_are_rendered_verbatim() -> None:
    values = VALUE_SETS["kueue"]["kueue"]
    objects = manifests(VALUE_SETS["kueue"])
    for kind, key in [("ResourceFlavor", "resourceFlavors"), ("ClusterQueue", "clusterQueues"), ("LocalQueue", "localQueues")]:
        rendered = [o for o in objects if o["kind"] == kind]
        assert [(o["metadata"]["name"], o["spec"]) for o in rendered] == [(v["name"], v["spec"]) for v in values[key]]
        assert all(o["metadata"]["labels"]["app.kubernetes.io/name"] == "nbscale" for o in rendered)


def test_the_quota_service_runs_as_the_brief_says() -> None:
    """One replica on SQLite: its claim, non-root, read-only root with /tmp, probes on the health URLs."""
    objects = manifests({})
    pod = _object(objects, "Deployment", "nbscale-quotas")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"]["path"].endswith("/health/ready")
    assert container["livenessProbe"]["httpGet"]["path"].endswith("/health/live")
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    assert _object(objects, "PersistentVolumeClaim", claim)


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def _undescribed(node: dict[str, Any], path: str) -> list[str]:
    missing = [] if "description" in node else [path or "/"]
    for key, child in node.get("properties", {}).items():
        missing += _undescribed(child, f"{path}/{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            missing += _undescribed(node[key], f"{path}/{key}")
    for pattern, child in node.get("patternProperties", {}).items():
        missing += _undescribed(child, f"{path}/{pattern}")
    return missing


def test_every_value_has_a_description() -> None:
    assert _undescribed(_schema(), "") == []


def test_cluster_config_values_are_the_models_fields() -> None:
    """values.clusterConfig takes ClusterConfig's fields, less the three the chart sets itself."""
    declared = set(_schema()["properties"]["clusterConfig"]["properties"])
    assert declared == set(ClusterConfig.model_fields) - {"namespace", "service_account", "mlflow_tracking_uri"}


_MLFLOW = {"enabled": True, "backendStore": {"secretName": "mlflow-db", "secretKey": "url"}}


@pytest.mark.parametrize(
    ("values", "where", "says"),
    [
        ({"quotas": {"replicas": 2}}, "/quotas/database/type", "value must be 'postgres'"),
        ({"quotas": {"replicas": 2, "database": {"type": "postgres", "postgres": {"secretName": "db", "secretKey": "url"}}}},
         "/quotas/cookieSecret/secretName", "minLength"),
        ({"quotas": {"database": {"type": "postgres"}}}, "/quotas/database/postgres/secretName", "minLength"),
        ({"quotas": {"database": {"type": "mysql"}}}, "/quotas/database/type", "value must be one of"),
        ({"quotas": {"replica": 2}}, "/quotas", "additional properties 'replica' not allowed"),
        ({"quotas": {"containerSecurityContext": {"readOnlyRootFilesystem": False}}},
         "/quotas/containerSecurityContext/readOnlyRootFilesystem", "value must be true"),
        ({"quotas": {"podSecurityContext": {"runAsNonRoot": False}}}, "/quotas/podSecurityContext/runAsNonRoot", "value must be true"),
        ({"quotas": {"hub": {"apiUrl": "hub:8081"}}}, "/quotas/hub/apiUrl", "does not match pattern"),
        ({"quotas": {"networkPolicy": {"allowedClients": []}}}, "/quotas/networkPolicy/allowedClients", "minItems"),
        ({"clusterConfig": {"namespace": "other"}}, "/clusterConfig", "additional properties 'namespace' not allowed"),
        ({"clusterConfig": {"pod_gc_strategy": "Never"}}, "/clusterConfig/pod_gc_strategy", "value must be one of"),
        ({"pools": {"pools": {"A100": {}}}}, "/pools/pools", "additional properties 'A100' not allowed"),
        ({"kueue": {"enabled": True, "localQueues": [{"name": "default", "spec": {"clusterQueue": "q"}}]}},
         "/kueue/localQueues/0/name", "'not' failed"),
        ({"kueue": {"enabled": True, "clusterQueues": [{"name": "team-a"}]}}, "/kueue/clusterQueues/0", "missing property 'spec'"),
        ({"mlflow": {"enabled": True}}, "/mlflow/backendStore/secretName", "minLength"),
        ({"mlflow": {**_MLFLOW, "artifacts": {"type": "s3"}}}, "/mlflow/artifacts/s3/bucket", "minLength"),
        ({"mlflow": {**_MLFLOW, "externalTrackingUri": "http://elsewhere:5000"}}, "/mlflow/externalTrackingUri", "maxLength"),
        ({"mlflow": {"externalTrackingUri": "mlflow:5000"}}, "/mlflow/externalTrackingUri", "does not match pattern"),
        ({"mlflow": {**_MLFLOW, "replicas": 2}}, "/mlflow/artifacts/pvc/accessModes", "contains"),
        ({"mlflow": {**_MLFLOW, "artifacts": {"type": "s3", "s3": {"bucket": "Bad_Bucket"}}}}, "/mlflow/artifacts/s3/bucket", "does not match pattern"),
        ({"quotas": {"extraArgs": ["; rm -rf /"]}}, "/quotas/extraArgs/0", "does not match pattern"),
        ({"image": {"tag": 1}}, "/image/tag", "got number, want string"),
    ],
)
def test_bad_values_are_refused_with_the_place_and_the_rule(values: dict[str, Any], where: str, says: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as refused:
        validate_values(values)
    message = str(refused.value)
    assert f"at '{where}'" in message and says in message, message


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_sets_are_accepted(name: str) -> None:
    validate_values(VALUE_SETS[name])


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("minimal", "No MLflow server is configured"),
        ("mlflow-pvc", f"http://nbscale-mlflow.{NAMESPACE}.svc:5000"),
        ("kueue", "kubectl get clusterqueues"),
    ],
)
def test_notes_say_what_to_do_next(name: str, says: str) -> None:
    notes = render(VALUE_SETS[name])["nbscale/templates/NOTES.txt"]
    assert "examples/z2jh-values.yaml" in notes and "rollout status deployment/nbscale-quotas" in notes
    assert says in notes, notes
