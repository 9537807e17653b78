"""Argo's objects as plain JSON-shaped dicts: the small builders every compiler module shares.

The compiler writes its manifests as dicts in Argo's own camelCase field names, rather than through
hera's generated models: importing hera builds ~300 pydantic models and cost ``nbscale compile``
~0.5 s of CPU, ten times the compile itself (issue 19). The contract stays Argo's schema: every
manifest is checked against the vendored, strict CRD (``validation.py``) by ``--validate``, before
every submit, and in the tests; the golden files pin the exact output.

A field whose value is None is left out, as Argo's own serializers do (``compact``), and
``detached`` gives the finished manifest as a tree that shares no object with the inputs or itself.
"""

from __future__ import annotations

from typing import Any

#: The ``apiVersion`` of Argo's Workflow.
WORKFLOW_API_VERSION = "argoproj.io/v1alpha1"

#: A JSON-shaped object of a manifest, in the API's camelCase field names.
ApiObject = dict[str, Any]


def compact(fields: ApiObject) -> ApiObject:
    """``fields`` without the ones whose value is None (unset, so not written)."""
    return {key: value for key, value in fields.items() if value is not None}


def parameter(name: str, value: str | None = None) -> ApiObject:
    """An Argo parameter: an input declaration without ``value``, an argument with one."""
    return compact({"name": name, "value": value})


def dag_task(name: str, template: str, *, arguments: list[ApiObject] | None = None, dependencies: list[str] | None = None,
             with_items: list[Any] | None = None) -> ApiObject:
    """One task of a DAG: the template it runs, its argument parameters, what it waits for, what it fans out over."""
    return compact({"name": name, "template": template,
                    "arguments": {"parameters": arguments} if arguments else None,
                    "dependencies": dependencies, "withItems": with_items})


def dag_template(name: str, tasks: list[ApiObject], *, parallelism: int | None = None) -> ApiObject:
    """A ``dag`` template of ``tasks``, at most ``parallelism`` pods at once (Argo's default: no limit)."""
    return compact({"name": name, "dag": {"tasks": tasks}, "parallelism": parallelism})


def detached(node: Any) -> Any:
    """A copy of ``node`` with None-valued fields left out and no object shared.

    Shared dicts would make ``yaml.safe_dump`` write anchors, and a caller changing its manifest
    (the executors add labels) must not change a cluster config or another template.
    """
    if isinstance(node, dict):
        return {key: detached(value) for key, value in node.items() if value is not None}
    if isinstance(node, list | tuple):
        return [detached(item) for item in node]
    return node
