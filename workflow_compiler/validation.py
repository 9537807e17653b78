"""Strict offline validation of manifests against the vendored upstream CRD schemas.

A manifest passes only if a Kubernetes API server with strict field validation would accept it:
the CRD's ``openAPIV3Schema`` for the requested served version (unknown fields rejected wherever
the schema does not preserve them), plus the ObjectMeta and type checks the server does itself.
Argo ``resource`` templates that embed a RayJob are checked against the KubeRay CRD too.

Not checked: ``x-kubernetes-validations`` (CEL rules) and ``format`` (int32 ranges, dates).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from workflow_compiler.crd_schemas import (
    KUEUE_CRDS,
    KUEUE_VERSION,
    RAYJOB_CRD,
    WORKFLOW_CRD,
    CrdSchema,
    strict_crd,
    strict_validator,
)
from workflow_compiler.errors import ManifestInvalid
from workflow_compiler.k8s_names import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_value_errors,
    qualified_name_errors,
)

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

ANNOTATIONS_MAX_BYTES = 256 * 1024

Path_ = tuple[str | int, ...]
_ARGO_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_ARGO_PLACEHOLDER = "argo-expr"
_SIMPLE_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
# A fragment of the pattern the CRDs use for resource quantities.
_QUANTITY_HINT = "([KMGTPE]i)"


@dataclass(frozen=True)
class Violation:
    """One reason a manifest is invalid: where (a JSON path) and what."""

    path: Path_
    msg: str

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.msg}"


def format_path(path: Path_) -> str:
    """``("spec", "templates", 0, "name")`` -> ``spec.templates[0].name``; ``<root>`` if empty."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "<root>"


def _json_type(value: Any) -> str:
    kinds: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("null", type(None)),
        ("boolean", bool),  # before integer: bool is a subclass of int
        ("integer", int),
        ("number", float),
        ("string", str),
        ("array", (list, tuple)),
        ("object", dict),
    )
    return next(
        (name for name, kind in kinds if isinstance(value, kind)), type(value).__name__
    )


def _short(value: Any, limit: int = 80) -> str:
    text = (
        json.dumps(value, default=repr)
        if not isinstance(value, str)
        else json.dumps(value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> str:
    kind = error.validator
    rule: Any = error.validator_value
    value: Any = error.instance
    if kind == "type":
        wanted = " or ".join(rule) if isinstance(rule, list) else rule
        return f"must be of type {wanted}, got {_json_type(value)} {_short(value)}"
    if kind == "enum":
        return f"unsupported value {_short(value)}; must be one of {', '.join(map(_short, rule))}"
    if kind == "pattern" and _QUANTITY_HINT in rule:
        return (
            f"{_short(value)} is not a Kubernetes quantity (for example 500m, 2, 1.5Gi)"
        )
    if kind == "pattern":
        return f"{_short(value)} does not match the pattern {rule}"
    if kind in ("minimum", "maximum"):
        return (
            f"must be {'>=' if kind == 'minimum' else '<='} {rule}, got {_short(value)}"
        )
    if kind in ("minItems", "maxItems", "minLength", "maxLength"):
        unit = "items" if kind.endswith("Items") else "characters"
        return f"must have at {'least' if kind.startswith('min') else 'most'} {rule} {unit}, has {len(value)}"
    if kind == "uniqueItems":
        return "duplicate entries in a list that must be a set"
    return error.message if len(error.message) < 200 else error.message[:197] + "..."


def _schema_violations(validator: Any, manifest: Any) -> Iterator[Violation]:
    for error in validator.iter_errors(manifest):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            for key in error.instance:
                if key not in known:
                    yield Violation((*path, key), "unknown field")
        elif error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    yield Violation((*path, key), "required field is missing")
        else:
            yield Violation(path, _describe(error))


def _type_meta_violations(
    manifest: dict[str, Any], crd: CrdSchema
) -> tuple[str, list[Violation]]:
    """Check apiVersion and kind as the server routes them; return the version to validate."""
    problems = []
    served = [f"{crd.group}/{v}" for v in crd.schemas]
    api_version = manifest.get("apiVersion")
    version = crd.storage_version
    if isinstance(api_version, str) and api_version in served:
        version = api_version.rpartition("/")[2]
    else:
        problems.append(
            Violation(
                ("apiVersion",),
                f"must be one of {', '.join(served)}, got {_short(api_version)}",
            )
        )
    if manifest.get("kind") != crd.kind:
        problems.append(
            Violation(
                ("kind",), f"must be {crd.kind!r}, got {_short(manifest.get('kind'))}"
            )
        )
    return version, problems


def _name_violations(meta: dict[str, Any]) -> Iterator[Violation]:
    name, generate_name, namespace = (
        meta.get("name"),
        meta.get("generateName"),
        meta.get("namespace"),
    )
    if not name and not generate_name:
        yield Violation(("metadata", "name"), "name or generateName is required")
    if isinstance(name, str) and name:
        yield from (
            Violation(("metadata", "name"), p) for p in dns1123_subdomain_errors(name)
        )
    if isinstance(generate_name, str) and generate_name:
        for problem in dns1123_subdomain_errors(generate_name, prefix=True):
            yield Violation(("metadata", "generateName"), problem)
    if isinstance(namespace, str) and namespace:
        yield from (
            Violation(("metadata", "namespace"), p)
            for p in dns1123_label_errors(namespace)
        )
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            for problem in qualified_name_errors(str(key).lower()):
                yield Violation(("metadata", "annotations", key), f"key {problem}")
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > ANNOTATIONS_MAX_BYTES:
            yield Violation(
                ("metadata", "annotations"),
                f"total size {size} exceeds {ANNOTATIONS_MAX_BYTES} bytes",
            )


def _label_violations(node: Any, path: Path_ = ()) -> Iterator[Violation]:
    """Check every ``metadata.labels`` map in the manifest, top level and pod templates alike.

    The server checks only the top-level ones; embedded pod labels would fail later, when the
    controller creates the pods, so they are checked here as well.
    """
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _label_violations(item, (*path, index))
    if not isinstance(node, dict):
        return
    labels = (
        node.get("metadata", {}).get("labels")
        if isinstance(node.get("metadata"), dict)
        else None
    )
    if isinstance(labels, dict):
        for key, value in labels.items():
            where = (*path, "metadata", "labels", key)
            yield from (
                Violation(where, f"key {p}") for p in qualified_name_errors(str(key))
            )
            if isinstance(value, str):
                yield from (
                    Violation(where, f"value {p}") for p in label_value_errors(value)
                )
    for key, child in node.items():
        if key != "metadata":
            yield from _label_violations(child, (*path, key))


def _manifest_violations(manifest: Any, crd_file: str) -> list[Violation]:
    if not isinstance(manifest, dict):
        return [Violation((), f"must be an object, got {_json_type(manifest)}")]
    version, problems = _type_meta_violations(manifest, strict_crd(crd_file))
    problems.extend(_schema_violations(strict_validator(crd_file, version), manifest))
    if isinstance(manifest.get("metadata"), dict):
        problems.extend(_name_violations(manifest["metadata"]))
    problems.extend(_label_violations(manifest))
    return problems


def _mask_argo_expressions(node: Any) -> Any:
    """Replace ``{{...}}`` in strings: Argo substitutes them before the manifest is created."""
    if isinstance(node, str):
        return _ARGO_EXPRESSION.sub(_ARGO_PLACEHOLDER, node)
    if isinstance(node, list):
        return [_mask_argo_expressions(item) for item in node]
    if isinstance(node, dict):
        return {key: _mask_argo_expressions(value) for key, value in node.items()}
    return node


def _embedded_violations(workflow: dict[str, Any]) -> Iterator[Violation]:
    """Check the manifests that Argo ``resource`` templates create (only RayJob is known)."""
    spec = workflow.get("spec")
    templates = spec.get("templates") if isinstance(spec, dict) else None
    for index, template in enumerate(templates if isinstance(templates, list) else []):
        resource = template.get("resource") if isinstance(template, dict) else None
        text = resource.get("manifest") if isinstance(resource, dict) else None
        if not isinstance(text, str):
            continue
        where: Path_ = ("spec", "templates", index, "resource", "manifest")
        try:
            embedded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            yield Violation(where, f"is not valid YAML: {exc}".replace("\n", " "))
            continue
        if not isinstance(embedded, dict):
            yield Violation(
                where, f"must be a YAML mapping, got {_json_type(embedded)}"
            )
        elif (
            str(embedded.get("apiVersion", "")).startswith("ray.io/")
            and embedded.get("kind") == "RayJob"
        ):
            for problem in rayjob_violations(_mask_argo_expressions(embedded)):
                yield Violation((*where, *problem.path), problem.msg)
        else:
            kind = f"{embedded.get('apiVersion')} {embedded.get('kind')}"
            yield Violation(
                where,
                f"no vendored schema for {kind}; only ray.io RayJob can be checked",
            )


def workflow_violations(manifest: Any) -> list[Violation]:
    """Every reason an Argo Workflow manifest would be refused, embedded RayJobs included."""
    problems = _manifest_violations(manifest, WORKFLOW_CRD)
    if isinstance(manifest, dict):
        problems.extend(_embedded_violations(manifest))
    return _unique(problems)


def rayjob_violations(manifest: Any) -> list[Violation]:
    """Every reason a KubeRay RayJob manifest would be refused."""
    return _unique(_manifest_violations(manifest, RAYJOB_CRD))


def kueue_violations(manifest: Any) -> list[Violation]:
    """Every reason a Kueue ResourceFlavor, ClusterQueue or LocalQueue would be refused, as ``v1beta2``.

    Strict about the version too: nbscale writes ``kueue.x-k8s.io/v1beta2`` only (v1beta1 is deprecated).
    """
    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    if kind not in KUEUE_CRDS:
        return [Violation(("kind",), f"must be one of {', '.join(KUEUE_CRDS)}, got {_short(kind)}")]
    problems = _manifest_violations(manifest, KUEUE_CRDS[kind])
    if manifest.get("apiVersion") != KUEUE_VERSION:
        problems.insert(0, Violation(("apiVersion",), f"must be {KUEUE_VERSION}, got {_short(manifest.get('apiVersion'))}"))
    return _unique(problems)


def validate_kueue(manifest: dict[str, Any]) -> None:
    """Raise ``ManifestInvalid`` listing every violation if the Kueue object would be refused."""
    _raise_if_any(str(manifest.get("kind", "Kueue object")), kueue_violations(manifest))


def workflow_errors(manifest: Any) -> list[str]:
    """``workflow_violations`` as ``"json.path: message"`` strings; empty when valid."""
    return [str(v) for v in workflow_violations(manifest)]


def rayjob_errors(manifest: Any) -> list[str]:
    """``rayjob_violations`` as ``"json.path: message"`` strings; empty when valid."""
    return [str(v) for v in rayjob_violations(manifest)]


def validate_workflow(manifest: dict[str, Any]) -> None:
    """Raise ``ManifestInvalid`` listing every violation if the Workflow would be refused."""
    _raise_if_any("Workflow", workflow_violations(manifest))


def validate_rayjob(manifest: dict[str, Any]) -> None:
    """Raise ``ManifestInvalid`` listing every violation if the RayJob would be refused."""
    _raise_if_any("RayJob", rayjob_violations(manifest))


def _unique(problems: list[Violation]) -> list[Violation]:
    return list(dict.fromkeys(problems))


def _raise_if_any(kind: str, problems: list[Violation]) -> None:
    if not problems:
        return
    lines = "\n".join(f"  {problem}" for problem in problems)
    raise ManifestInvalid(
        f"The {kind} manifest does not validate against the upstream CRD schema"
        f" ({len(problems)} error{'s' if len(problems) != 1 else ''}):\n{lines}",
        errors=[
            {"loc": list(p.path), "msg": p.msg, "path": format_path(p.path)}
            for p in problems
        ],
    )
