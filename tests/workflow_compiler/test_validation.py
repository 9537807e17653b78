"""The strict CRD validator: valid manifests pass, and each kind of mistake fails with its path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from workflow_compiler import validation
from workflow_compiler.errors import ManifestInvalid

DELETE = object()

WORKFLOW: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {
        "generateName": "train-",
        "labels": {
            "nbscale.io/run-id": "nbs-0123456789",
            "nbscale.io/notebook": "train.ipynb",
        },
    },
    "spec": {
        "entrypoint": "main",
        "activeDeadlineSeconds": 600,
        "podGC": {"strategy": "OnWorkflowSuccess"},
        "arguments": {"parameters": [{"name": "n_estimators", "value": "200"}]},
        "templates": [
            {
                "name": "main",
                "retryStrategy": {"limit": 2, "retryPolicy": "OnFailure"},
                "container": {
                    "image": "python:3.11",
                    "command": ["nbscale-step"],
                    "args": [
                        "--parameter",
                        "n_estimators={{workflow.parameters.n_estimators}}",
                    ],
                    "env": [
                        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}
                    ],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1}
                    },
                },
            }
        ],
    },
}

RAYJOB: dict[str, Any] = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {
        "generateName": "sweep-",
        "labels": {"nbscale.io/run-id": "nbs-0123456789"},
    },
    "spec": {
        "entrypoint": "python -m workflow_compiler.sweep",
        "shutdownAfterJobFinishes": True,
        "rayClusterSpec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {
                    "metadata": {"labels": {"app": "ray-head"}},
                    "spec": {
                        "containers": [
                            {"name": "ray-head", "image": "rayproject/ray:2.40.0"}
                        ]
                    },
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 1,
                    "minReplicas": 0,
                    "maxReplicas": 2,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "rayproject/ray:2.40.0",
                                    "resources": {"limits": {"nvidia.com/gpu": 1}},
                                }
                            ]
                        }
                    },
                }
            ],
        },
    },
}

HEAD = ("spec", "rayClusterSpec", "headGroupSpec")
WORKER = ("spec", "rayClusterSpec", "workerGroupSpecs", 0)
CONTAINER = ("spec", "templates", 0, "container")


def mutated(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` set at ``path`` (or the key removed for DELETE)."""
    manifest = copy.deepcopy(base)
    node: Any = manifest
    for part in path[:-1]:
        node = node[part]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return manifest


def workflow_with_resource(manifest: Any) -> dict[str, Any]:
    """The valid Workflow whose only template creates ``manifest`` (a YAML string) on the cluster."""
    template = {"name": "main", "resource": {"action": "create", "manifest": manifest}}
    return mutated(WORKFLOW, ("spec", "templates"), [template])


def test_minimal_manifests_are_valid() -> None:
    validation.validate_workflow(WORKFLOW)
    validation.validate_rayjob(RAYJOB)
    assert validation.workflow_errors(WORKFLOW) == []
    assert validation.rayjob_errors(RAYJOB) == []


WORKFLOW_CASES = [
    ("unknown top-level field", ("status2",), {}, "status2: unknown field"),
    (
        "unknown spec field",
        ("spec", "entrypont"),
        "main",
        "spec.entrypont: unknown field",
    ),
    (
        "unknown container field",
        (*CONTAINER, "resourcez"),
        {},
        "spec.templates[0].container.resourcez: unknown field",
    ),
    (
        "typo deep in a container",
        (*CONTAINER, "resources", "limitz"),
        {"cpu": "1"},
        "spec.templates[0].container.resources.limitz: unknown field",
    ),
    (
        "unknown field in an empty-object schema",
        ("spec", "arguments", "parameters", 0, "valueFrom"),
        {"supplied": {"x": 1}},
        "spec.arguments.parameters[0].valueFrom.supplied.x: unknown field",
    ),
    (
        "unknown metadata field",
        ("metadata", "lables"),
        {},
        "metadata.lables: unknown field",
    ),
    (
        "wrong type integer",
        ("spec", "activeDeadlineSeconds"),
        "600",
        "spec.activeDeadlineSeconds: must be of type integer",
    ),
    (
        "wrong type array",
        (*CONTAINER, "command"),
        "nbscale-step",
        "spec.templates[0].container.command: must be of type array",
    ),
    (
        "null is not a string",
        (*CONTAINER, "image"),
        None,
        "spec.templates[0].container.image: must be of type string",
    ),
    ("missing spec", ("spec",), DELETE, "spec: required field is missing"),
    (
        "missing parameter name",
        ("spec", "arguments", "parameters", 0, "name"),
        DELETE,
        "spec.arguments.parameters[0].name: required field is missing",
    ),
    (
        "bad enum podGC",
        ("spec", "podGC", "strategy"),
        "Whenever",
        'spec.podGC.strategy: unsupported value "Whenever"',
    ),
    (
        "bad enum retry",
        ("spec", "templates", 0, "retryStrategy", "retryPolicy"),
        "Sometimes",
        "spec.templates[0].retryStrategy.retryPolicy: unsupported value",
    ),
    (
        "int-or-string is not a float",
        ("spec", "templates", 0, "retryStrategy", "limit"),
        1.5,
        "spec.templates[0].retryStrategy.limit: must be of type integer or string",
    ),
    (
        "bad quantity",
        (*CONTAINER, "resources", "limits", "memory"),
        "1 GB",
        'spec.templates[0].container.resources.limits.memory: "1 GB" is not a Kubernetes quantity',
    ),
    (
        "duplicate env name",
        (*CONTAINER, "env"),
        [{"name": "A"}, {"name": "A"}],
        "spec.templates[0].container.env[1]: duplicate entry",
    ),
    (
        "duplicate in a set list",
        (*CONTAINER, "restartPolicyRules"),
        [{"action": "Restart", "exitCodes": {"operator": "In", "values": [1, 1]}}],
        "spec.templates[0].container.restartPolicyRules[0].exitCodes.values: duplicate entries",
    ),
    (
        "bad label value",
        ("metadata", "labels", "nbscale.io/notebook"),
        "notebooks/train.ipynb",
        'metadata.labels["nbscale.io/notebook"]: value must be empty, or letters',
    ),
    (
        "label value too long",
        ("metadata", "labels", "user"),
        "a" * 64,
        "metadata.labels.user: value must be at most 63 characters",
    ),
    (
        "bad label key",
        ("metadata", "labels", "-run"),
        "x",
        'metadata.labels["-run"]: key name part must be',
    ),
    (
        "bad pod label",
        ("spec", "templates", 0, "metadata"),
        {"labels": {"a": "b c"}},
        "spec.templates[0].metadata.labels.a: value must be",
    ),
    (
        "bad generateName",
        ("metadata", "generateName"),
        "Train_",
        "metadata.generateName: must be lowercase",
    ),
    ("bad name", ("metadata", "name"), "train..v2", "metadata.name: must be lowercase"),
    (
        "no name or generateName",
        ("metadata", "generateName"),
        DELETE,
        "metadata.name: name or generateName is required",
    ),
    (
        "bad namespace",
        ("metadata", "namespace"),
        "team.a",
        "metadata.namespace: must be lowercase",
    ),
    (
        "wrong apiVersion",
        ("apiVersion",),
        "argoproj.io/v1",
        "apiVersion: must be one of argoproj.io/v1alpha1",
    ),
    ("wrong kind", ("kind",), "WorkflowTemplate", "kind: must be 'Workflow'"),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [c[1:] for c in WORKFLOW_CASES],
    ids=[c[0] for c in WORKFLOW_CASES],
)
def test_invalid_workflow_names_the_path(
    path: tuple[Any, ...], value: Any, expected: str
) -> None:
    manifest = mutated(WORKFLOW, path, value)
    with pytest.raises(ManifestInvalid) as caught:
        validation.validate_workflow(manifest)
    assert any(
        line.startswith(expected) for line in validation.workflow_errors(manifest)
    ), validation.workflow_errors(manifest)
    assert expected.split(":")[0] in str(caught.value)
    assert any(e["path"] == expected.split(":")[0] for e in caught.value.errors)


RAYJOB_CASES = [
    ("unknown top-level field", ("specs",), {}, "specs: unknown field"),
    (
        "unknown head container field",
        (*HEAD, "template", "spec", "containers", 0, "imagez"),
        "x",
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].imagez: unknown field",
    ),
    (
        "unknown worker group field",
        (*WORKER, "replica"),
        1,
        "spec.rayClusterSpec.workerGroupSpecs[0].replica: unknown field",
    ),
    (
        "wrong type",
        ("spec", "shutdownAfterJobFinishes"),
        "yes",
        "spec.shutdownAfterJobFinishes: must be of type boolean",
    ),
    (
        "missing head template",
        (*HEAD, "template"),
        DELETE,
        "spec.rayClusterSpec.headGroupSpec.template: required field is missing",
    ),
    (
        "missing worker maxReplicas",
        (*WORKER, "maxReplicas"),
        DELETE,
        "spec.rayClusterSpec.workerGroupSpecs[0].maxReplicas: required field is missing",
    ),
    (
        "bad enum",
        ("spec", "rayClusterSpec", "upgradeStrategy"),
        {"type": "Rolling"},
        'spec.rayClusterSpec.upgradeStrategy.type: unsupported value "Rolling"',
    ),
    (
        "bad pod label value",
        (*HEAD, "template", "metadata", "labels", "app"),
        "ray head",
        "spec.rayClusterSpec.headGroupSpec.template.metadata.labels.app: value must be",
    ),
    (
        "bad label value",
        ("metadata", "labels", "nbscale.io/run-id"),
        "nbs_",
        'metadata.labels["nbscale.io/run-id"]: value must be',
    ),
    (
        "bad generateName",
        ("metadata", "generateName"),
        "-sweep-",
        "metadata.generateName: must be lowercase",
    ),
    (
        "wrong apiVersion",
        ("apiVersion",),
        "ray.io/v2",
        "apiVersion: must be one of ray.io/v1",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [c[1:] for c in RAYJOB_CASES],
    ids=[c[0] for c in RAYJOB_CASES],
)
def test_invalid_rayjob_names_the_path(
    path: tuple[Any, ...], value: Any, expected: str
) -> None:
    manifest = mutated(RAYJOB, path, value)
    with pytest.raises(ManifestInvalid) as caught:
        validation.validate_rayjob(manifest)
    assert any(
        line.startswith(expected) for line in validation.rayjob_errors(manifest)
    ), validation.rayjob_errors(manifest)
    assert expected.split(":")[0] in str(caught.value)


INT_OR_STRING_CASES = [
    ("workflow", ("spec", "templates", 0, "retryStrategy", "limit"), 3),
    ("workflow", ("spec", "templates", 0, "retryStrategy", "limit"), "3"),
    ("workflow", (*CONTAINER, "resources", "limits", "cpu"), 2),
    ("workflow", (*CONTAINER, "resources", "limits", "cpu"), "1500m"),
    (
        "rayjob",
        (
            *WORKER,
            "template",
            "spec",
            "containers",
            0,
            "resources",
            "limits",
            "nvidia.com/gpu",
        ),
        1,
    ),
    (
        "rayjob",
        (
            *WORKER,
            "template",
            "spec",
            "containers",
            0,
            "resources",
            "limits",
            "nvidia.com/gpu",
        ),
        "1",
    ),
]


@pytest.mark.parametrize(("kind", "path", "value"), INT_OR_STRING_CASES)
def test_int_or_string_accepts_both(
    kind: str, path: tuple[Any, ...], value: Any
) -> None:
    base = WORKFLOW if kind == "workflow" else RAYJOB
    check = (
        validation.validate_workflow
        if kind == "workflow"
        else validation.validate_rayjob
    )
    check(mutated(base, path, value))


def test_every_error_is_reported_at_once() -> None:
    manifest = mutated(
        mutated(WORKFLOW, (*CONTAINER, "resourcez"), {}),
        ("spec", "podGC", "strategy"),
        "x",
    )
    with pytest.raises(ManifestInvalid) as caught:
        validation.validate_workflow(manifest)
    paths = {e["path"] for e in caught.value.errors}
    assert paths == {"spec.templates[0].container.resourcez", "spec.podGC.strategy"}
    assert caught.value.errors[0]["loc"][0] == "spec"
    assert "2 errors" in caught.value.message


def test_embedded_rayjob_is_checked_inside_a_resource_template() -> None:
    good = dict(RAYJOB, metadata={"generateName": "{{workflow.name}}-"})
    validation.validate_workflow(workflow_with_resource(yaml.safe_dump(good)))

    bad = mutated(good, (*HEAD, "template", "spec", "containers", 0, "imagez"), "x")
    errors = validation.workflow_errors(workflow_with_resource(yaml.safe_dump(bad)))
    assert errors == [
        (
            "spec.templates[0].resource.manifest.spec.rayClusterSpec.headGroupSpec"
            ".template.spec.containers[0].imagez: unknown field"
        )
    ]


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("kind: [unclosed", "is not valid YAML"),
        ("- a list", "must be a YAML mapping"),
        (
            yaml.safe_dump(dict(RAYJOB, kind="Rayjob")),
            "no vendored schema for ray.io/v1 Rayjob",
        ),
        (
            yaml.safe_dump(dict(RAYJOB, metadata={"name": "Sweep"})),
            "manifest.metadata.name: must be lowercase",
        ),
    ],
)
def test_bad_embedded_manifest(manifest: str, expected: str) -> None:
    errors = validation.workflow_errors(workflow_with_resource(manifest))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize(
    ("field", "errors"),
    [
        ("lastUpdateTime", []),  # declared nullable: true
        (
            "state",
            ["status.rayClusterStatus.state: must be of type string, got null null"],
        ),
    ],
)
def test_null_only_where_the_schema_says_nullable(
    field: str, errors: list[str]
) -> None:
    manifest = mutated(RAYJOB, ("status",), {"rayClusterStatus": {field: None}})
    assert validation.rayjob_errors(manifest) == errors
