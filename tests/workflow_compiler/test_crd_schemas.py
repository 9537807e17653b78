"""The vendored CRDs and their conversion into strict JSON Schema."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from file_times import restore_old_times

from workflow_compiler import crd_schemas


def test_schema_rejects_unknown_fields_in_spec() -> None:
    """The vendored CRD is the full one: nothing under spec preserves unknown fields."""
    schema = crd_schemas.strict_validator(crd_schemas.WORKFLOW_CRD, "v1alpha1").schema
    spec = schema["properties"]["spec"]
    container = spec["properties"]["templates"]["items"]["properties"]["container"]
    assert spec["additionalProperties"] is False
    assert container["additionalProperties"] is False
    raw = crd_schemas.load_crd(crd_schemas.WORKFLOW_CRD).schemas["v1alpha1"][
        "properties"
    ]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in raw


def test_vendored_schemas_match_their_provenance() -> None:
    provenance = (crd_schemas.SCHEMA_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    lines = re.findall(r"^([0-9a-f]{64})  (\S+)$", provenance, re.MULTILINE)
    recorded = {name: digest for digest, name in lines}
    vendored = {str(p.relative_to(crd_schemas.SCHEMA_DIR)) for p in crd_schemas.SCHEMA_DIR.glob("*/*.yaml")}
    assert set(recorded) == vendored
    assert {crd_schemas.WORKFLOW_CRD, crd_schemas.RAYJOB_CRD, *crd_schemas.KUEUE_CRDS.values()} <= vendored
    for name, digest in recorded.items():
        assert (
            hashlib.sha256((crd_schemas.SCHEMA_DIR / name).read_bytes()).hexdigest()
            == digest
        )
    assert provenance.count("Apache-2.0") >= 2


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, False),
        ({"type": "object"}, False),
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, None),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            {"type": "string"},
        ),
    ],
)
def test_pruning_becomes_additional_properties(node: dict, expected: object) -> None:
    assert crd_schemas.to_json_schema(node).get("additionalProperties") == expected


def test_int_or_string_and_nullable_become_type_lists() -> None:
    int_or_string = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    converted = crd_schemas.to_json_schema(
        {**int_or_string, "x-kubernetes-int-or-string": True}
    )
    assert converted == {
        "type": ["integer", "string"],
        "x-kubernetes-int-or-string": True,
    }
    nullable = crd_schemas.to_json_schema({"type": "string", "nullable": True})
    assert nullable["type"] == ["string", "null"]


def test_served_versions_are_loaded() -> None:
    rayjob = crd_schemas.load_crd(crd_schemas.RAYJOB_CRD)
    assert (rayjob.group, rayjob.kind, rayjob.storage_version) == (
        "ray.io",
        "RayJob",
        "v1",
    )
    assert set(rayjob.schemas) == {"v1", "v1alpha1"}


ALL_CRDS = [crd_schemas.WORKFLOW_CRD, crd_schemas.RAYJOB_CRD, *crd_schemas.KUEUE_CRDS.values()]


@pytest.mark.parametrize("relative", ALL_CRDS)
def test_strict_copies_are_the_conversion_of_their_yaml(relative: str) -> None:
    """schemas/strict/ holds what validation would convert itself (regenerate with NBSCALE_REGEN_GOLDEN=1)."""
    expected = crd_schemas.convert_crd(relative)
    path = crd_schemas.strict_copy_path(relative)
    if os.environ.get("NBSCALE_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(expected, indent=0, sort_keys=True) + "\n", encoding="utf-8")  # one value a line: diffs a reviewer can read
    assert json.loads(path.read_text(encoding="utf-8")) == expected


def test_a_stale_strict_copy_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRD updated without its copy is converted from its YAML, never checked against the old copy."""
    relative = crd_schemas.KUEUE_CRDS["LocalQueue"]
    stale = {**crd_schemas.convert_crd(relative), "source_sha256": "0" * 64, "kind": "Stale"}
    monkeypatch.setattr(crd_schemas, "STRICT_DIR", tmp_path)
    crd_schemas.strict_copy_path(relative).parent.mkdir(parents=True)
    crd_schemas.strict_copy_path(relative).write_text(json.dumps(stale), encoding="utf-8")
    crd_schemas.strict_crd.cache_clear()
    try:
        assert crd_schemas.strict_crd(relative).kind == "LocalQueue"
    finally:
        crd_schemas.strict_crd.cache_clear()


@pytest.mark.parametrize("copy", ["current", "unreadable"])
@pytest.mark.parametrize("collecting", [True, False])
def test_reading_a_copy_leaves_the_garbage_collector_as_it_was(copy: str, collecting: bool, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector pauses only for the parse (it made the parse 10x slower), and comes back even when the copy is bad."""
    import gc

    relative = crd_schemas.KUEUE_CRDS["LocalQueue"]
    monkeypatch.setattr(crd_schemas, "STRICT_DIR", tmp_path)
    crd_schemas.strict_copy_path(relative).parent.mkdir(parents=True)
    text = json.dumps(crd_schemas.convert_crd(relative)) if copy == "current" else "{not json"
    crd_schemas.strict_copy_path(relative).write_text(text, encoding="utf-8")
    pauses: list[bool] = []
    real_loads = json.loads
    monkeypatch.setattr(crd_schemas.json, "loads", lambda raw: pauses.append(gc.isenabled()) or real_loads(raw))
    crd_schemas.strict_crd.cache_clear()
    was_enabled = gc.isenabled()
    (gc.enable if collecting else gc.disable)()
    try:
        assert crd_schemas.strict_crd(relative).kind == "LocalQueue"
        assert gc.isenabled() is collecting
    finally:
        (gc.enable if was_enabled else gc.disable)()
        crd_schemas.strict_crd.cache_clear()
    assert pauses[:1] == [False]


def test_the_yaml_digest_is_cached_and_a_changed_yaml_invalidates_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A validating process does not hash the vendored YAML again, yet any change of the YAML is seen."""
    from workflow_compiler import home_cache

    relative = crd_schemas.KUEUE_CRDS["LocalQueue"]
    # A copy that names the YAML's true digest but another kind: used exactly while the digest matches.
    marked = {**crd_schemas.convert_crd(relative), "kind": "FromTheCopy"}
    schemas, home = tmp_path / "schemas", tmp_path / "home"
    (schemas / relative).parent.mkdir(parents=True)
    (schemas / relative).write_bytes((crd_schemas.SCHEMA_DIR / relative).read_bytes())
    home.mkdir(mode=0o700)
    monkeypatch.setattr(crd_schemas, "SCHEMA_DIR", schemas)
    monkeypatch.setattr(crd_schemas, "STRICT_DIR", schemas / "strict")
    monkeypatch.setattr(home_cache, "RACY_SECONDS", 0.0)
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    crd_schemas.strict_copy_path(relative).parent.mkdir(parents=True)
    crd_schemas.strict_copy_path(relative).write_text(json.dumps(marked), encoding="utf-8")
    reads: list[str] = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real_read(self))

    def kind() -> str:
        crd_schemas.strict_crd.cache_clear()
        crd_schemas.load_crd.cache_clear()
        return crd_schemas.strict_crd(relative).kind

    try:
        assert kind() == "FromTheCopy" and reads == [Path(relative).name]  # hashed once...
        assert kind() == "FromTheCopy" and reads == [Path(relative).name]  # ...and not by the next process
        yaml_file = schemas / relative
        times = yaml_file.stat()
        text = yaml_file.read_text(encoding="utf-8")
        yaml_file.write_text(text.replace("LocalQueue", "LocalQueuX", 1).replace("localqueue", "localqueuX", 1),
                             encoding="utf-8")  # same size, and below its old times again
        restore_old_times(yaml_file, times)
        assert yaml_file.stat().st_size == times.st_size
        assert kind() != "FromTheCopy"  # the copy no longer matches: converted from the YAML itself
    finally:
        crd_schemas.strict_crd.cache_clear()
        crd_schemas.load_crd.cache_clear()
