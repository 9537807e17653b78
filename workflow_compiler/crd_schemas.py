"""The vendored upstream CRDs, compiled into strict JSON Schema validators.

A CRD's ``openAPIV3Schema`` is a structural schema: the API server prunes every field it does not
declare, and with strict field validation it rejects them instead. ``strict_validator`` turns that
rule into explicit ``additionalProperties: false`` so that plain ``jsonschema`` can enforce it.

Validation reads the strict schemas already converted, from ``schemas/strict/`` (``strict_crd``):
parsing the 46,000-line Argo CRD's YAML takes 1-2.5 s here, its strict JSON copy ~10 ms. Each copy
names the SHA-256 of the YAML it came from, so a CRD updated without its copy is converted afresh;
the YAML's own digest is cached per version of the file (``source_sha256``).
Regenerate them with ``NBSCALE_REGEN_GOLDEN=1 pytest tests/workflow_compiler/test_crd_schemas.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .gc_pause import collector_paused
from .home_cache import cached_in_home, file_identity

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).parent / "schemas"
STRICT_DIR = SCHEMA_DIR / "strict"
WORKFLOW_CRD = "argo-workflows/argoproj.io_workflows.yaml"
RAYJOB_CRD = "kuberay/ray.io_rayjobs.yaml"
#: Kueue's CRDs by kind; nbscale writes their ``v1beta2`` version (``workflow_compiler/kueue.py``).
KUEUE_CRDS = {
    "ResourceFlavor": "kueue/kueue.x-k8s.io_resourceflavors.yaml",
    "ClusterQueue": "kueue/kueue.x-k8s.io_clusterqueues.yaml",
    "LocalQueue": "kueue/kueue.x-k8s.io_localqueues.yaml",
}
KUEUE_VERSION = "kueue.x-k8s.io/v1beta2"

_SKIPPED_KEYWORDS = {"description", "default", "example", "x-kubernetes-validations"}

_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
# Hand-written: CRD schemas declare metadata as a bare object; the server checks it as ObjectMeta.
_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{
            k: _STRING
            for k in ("name", "generateName", "namespace", "uid", "resourceVersion")
        },
        **{k: _STRING for k in ("selfLink", "creationTimestamp", "deletionTimestamp")},
        "generation": _INTEGER,
        "deletionGracePeriodSeconds": _INTEGER,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": _STRING},
        "managedFields": {"type": "array", "items": {"type": "object"}},
        "ownerReferences": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["apiVersion", "kind", "name", "uid"],
                "properties": {
                    **{k: _STRING for k in ("apiVersion", "kind", "name", "uid")},
                    "controller": {"type": "boolean"},
                    "blockOwnerDeletion": {"type": "boolean"},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class CrdSchema:
    """A CRD's group, kind and the ``openAPIV3Schema`` of each served version."""

    group: str
    kind: str
    storage_version: str
    schemas: dict[str, dict[str, Any]]  # served version -> openAPIV3Schema


@cache
def load_crd(relative: str) -> CrdSchema:
    """Read a vendored CRD (a path under ``SCHEMA_DIR``) once per process."""
    started = time.perf_counter()
    spec = _cached_crd_spec(SCHEMA_DIR / relative)
    served = {
        v["name"]: v["schema"]["openAPIV3Schema"]
        for v in spec["versions"]
        if v["served"]
    }
    storage = next(v["name"] for v in spec["versions"] if v["storage"])
    log.debug("loaded %s in %.2fs", relative, time.perf_counter() - started)
    return CrdSchema(spec["group"], spec["names"]["kind"], storage, served)


def _cached_crd_spec(path: Path) -> dict[str, Any]:
    """The CRD's ``spec``, parsed from YAML once per machine and then read from a JSON copy.

    Parsing the 46,000-line Argo CRD takes 1-2.5 s here; its JSON copy under $NBSCALE_HOME/cache
    (``home_cache.py``, keyed by the YAML's bytes) loads in ~50 ms.
    """
    raw = path.read_bytes()

    def parse() -> dict[str, Any]:
        spec: dict[str, Any] = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["spec"]
        return spec

    return cached_in_home("crd", raw, parse, dump=lambda spec: json.dumps(spec).encode("utf-8"), load=_json_object,
                          suffix=".json")


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise TypeError(f"a cached CRD holds a {type(value).__name__}, not an object")
    return value


def source_sha256(relative: str) -> str:
    """The SHA-256 of a vendored CRD's YAML, computed once per version of the file on this machine.

    Hashing the 2.8 MB Argo YAML in every validating process only confirmed that its strict copy
    is current; the digest is cached under the file's identity (``home_cache.file_identity``:
    inode, size, mtime, ctime), which any change of the file changes.
    """
    path = SCHEMA_DIR / relative

    def digest() -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    identity = file_identity(path)
    if identity is None:  # changed a moment ago: hashed afresh until it settles
        return digest()
    return cached_in_home("crd-sha256", identity, digest, dump=str.encode, load=_hex_digest)


def _hex_digest(data: bytes) -> str:
    text = data.decode("ascii")
    if len(text) != 64 or text.strip("0123456789abcdef"):
        raise ValueError("a cached digest that is not 64 hex digits")
    return text


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Turn one structural OpenAPI v3 schema node into JSON Schema with pruning made explicit."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SKIPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "not") or (
            key == "additionalProperties" and isinstance(value, dict)
        ):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(child) for child in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        # The anyOf only repeats the int-or-string rule, with a vaguer error message.
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    is_object = node.get("type") == "object" or "properties" in node
    preserves = node.get("x-kubernetes-preserve-unknown-fields", False)
    if is_object and "additionalProperties" not in node and not preserves:
        # The server prunes (strict mode: rejects) fields the schema does not declare.
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """Entries of an ``x-kubernetes-list-type: map`` list must be unique by their key fields."""
    from jsonschema.exceptions import ValidationError

    if not isinstance(instance, list):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        identity = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
        if identity in seen:
            yield ValidationError(
                f"duplicate entry {identity} (same as item [{seen[identity]}])",
                path=[index],
            )
        seen.setdefault(identity, index)


def strict_copy_path(relative: str) -> Path:
    """Where the strict JSON copy of a vendored CRD (a path under ``SCHEMA_DIR``) lives."""
    return STRICT_DIR / Path(relative).with_suffix(".json")


def convert_crd(relative: str) -> dict[str, Any]:
    """A vendored CRD's identity and the strict JSON Schema of each served version, as its copy holds them."""
    crd = load_crd(relative)
    return {
        "source": relative,
        "source_sha256": hashlib.sha256((SCHEMA_DIR / relative).read_bytes()).hexdigest(),  # the regenerated copy: never cached
        "group": crd.group,
        "kind": crd.kind,
        "storage_version": crd.storage_version,
        "schemas": {version: to_json_schema(schema) for version, schema in crd.schemas.items()},
    }


@cache
def strict_crd(relative: str) -> CrdSchema:
    """A vendored CRD whose ``schemas`` are already strict JSON Schema, from its copy when that is current."""
    digest = source_sha256(relative)
    try:
        text = strict_copy_path(relative).read_text(encoding="utf-8")
        with collector_paused():  # ~100,000 dicts and lists, no cycle: 6 ms instead of 40-70
            data = json.loads(text)
    except (OSError, ValueError):
        data = {}
    if data.get("source_sha256") != digest:
        log.info("%s has no current strict copy; converting it (slow)", relative)
        data = convert_crd(relative)
    return CrdSchema(data["group"], data["kind"], data["storage_version"], data["schemas"])


@cache
def strict_validator(relative: str, version: str) -> Any:
    """A cached ``jsonschema`` validator for one served version of a vendored CRD."""
    # Imported here: jsonschema with its format checkers takes ~0.1 s, which the light commands skip.
    import jsonschema

    # jsonschema has no keyword for keyed-list uniqueness, so this one is added by hand.
    strict = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
    )
    schema = strict_crd(relative).schemas[version]
    # A new top level: the cached copy stays as converted for every other validator built from it.
    return strict({**schema, "properties": {**schema["properties"], "metadata": _OBJECT_META}})
