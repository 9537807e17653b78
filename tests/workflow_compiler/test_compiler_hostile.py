"""Hostile input reaches the manifest only as escaped JSON data, never as an Argo expression.

Every string in the compiled manifest is scanned: the only ``{{...}}`` expressions are the ones the
compiler writes itself, and every value, experiment, tag and notebook path round-trips byte for
byte through ``json.loads`` after an Argo-style substitution.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.compiler import compile_workflow, to_yaml
from workflow_compiler.spec import PipelineSpec, RunSpec
from workflow_compiler.stepconfig import StepConfig
from workflow_compiler.validation import validate_workflow

HOSTILE = [
    '"; rm -rf /',
    "$(id)",
    "`id`",
    "${HOME}",
    "{{workflow.name}}",
    "{{=sprig.env('HOME')}}",
    "{{ workflow.name }}",
    "{{",
    "}}",
    "}}{{",
    "{{{{}}}}",
    "{",
    "a\nb",
    "a\r\nb\tc\x00d",
    "key: [yaml]",
    "!!python/object/apply:os.system ['id']",
    "- item\n- other",
    "'single' \"double\" \\back\\slash\\",
    "\\u007b\\u007bworkflow.name\\u007d\\u007d",
    "Ève 🚀 ✓ 中文",
    "\u2028line separator",
    "",
]
HOSTILE_STRUCTURES: list[Any] = [
    {"{{k}}": "{{v}}", "$(id)": ["a\nb", {"}}": "{{"}]},
    ["{{", "}}", {"x": {"y": "{{workflow.uid}}"}}],
    {"": None, "n": [1, 2.5, True, None]},
]
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def _strings(node: Any) -> Iterator[str]:
    """Every string in a manifest, dict keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _expressions(manifest: dict[str, Any]) -> set[str]:
    """The ``{{...}}`` expressions in the manifest; fails if any brace pair is left outside one."""
    found: set[str] = set()
    for text in _strings(manifest):
        found.update(EXPRESSION.findall(text))
        rest = EXPRESSION.sub("", text)
        assert "{{" not in rest and "}}" not in rest, f"stray braces in {text!r}"
    return found


def _run_expressions(names: list[str]) -> set[str]:
    return ({"{{workflow.name}}"} | {f"{{{{workflow.parameters.{n}}}}}" for n in names}
            | {f"{{{{inputs.parameters.{n}}}}}" for n in names})


def _substitute(text: str, scope: dict[str, str]) -> str:
    """Argo's simple-tag substitution, one pass (as the controller does for these tags)."""
    return EXPRESSION.sub(lambda m: scope[m.group(0)[2:-2]], text)


def _parameters_as_the_step_receives_them(manifest: dict[str, Any]) -> dict[str, Any]:
    """Resolve workflow → task → template parameters and decode each ``--parameter NAME=JSON``."""
    spec = manifest["spec"]
    scope = {f"workflow.parameters.{p['name']}": p["value"] for p in spec["arguments"]["parameters"]}
    task = spec["templates"][0]["dag"]["tasks"][0]
    for argument in task["arguments"]["parameters"]:
        scope[f"inputs.parameters.{argument['name']}"] = _substitute(argument["value"], scope)
    template = next(t for t in spec["templates"] if t["name"] == task["template"])
    args = template["container"]["args"]
    decoded = {}
    for flag, value in itertools.pairwise(args):
        if flag == "--parameter":
            name, _, text = _substitute(value, scope).partition("=")
            decoded[name] = json.loads(text)
    return decoded


def _config(manifest: dict[str, Any], template: str = "notebook") -> StepConfig:
    args = next(t for t in manifest["spec"]["templates"] if t["name"] == template)["container"]["args"]
    return StepConfig.from_arg(args[args.index("--config") + 1])


@pytest.mark.parametrize("value", HOSTILE + HOSTILE_STRUCTURES, ids=lambda v: repr(v)[:30])
def test_a_hostile_value_is_only_escaped_json(value: Any) -> None:
    manifest = compile_workflow(RunSpec(notebook="train.ipynb", user="alice", parameters={"x": value}))
    assert _expressions(manifest) == _run_expressions(["x"])
    (argument,) = manifest["spec"]["arguments"]["parameters"]
    assert json.loads(argument["value"]) == value
    assert json.dumps(json.loads(argument["value"]), sort_keys=True) == json.dumps(value, sort_keys=True)  # byte for byte
    assert _parameters_as_the_step_receives_them(manifest) == {"x": value}
    assert yaml.safe_load(to_yaml(manifest)) == manifest
    validate_workflow(manifest)


def test_all_hostile_values_at_once_including_yaml_round_trip() -> None:
    values = {f"p{i}": v for i, v in enumerate(HOSTILE + HOSTILE_STRUCTURES)}
    manifest = compile_workflow(RunSpec(notebook="train.ipynb", user="alice", parameters=values))
    reloaded = yaml.safe_load(to_yaml(manifest))
    assert _parameters_as_the_step_receives_them(reloaded) == values
    assert _expressions(reloaded) == _run_expressions(list(values))


@pytest.mark.parametrize("text", HOSTILE[:-1], ids=lambda v: repr(v)[:30])
def test_experiment_tags_user_and_notebook_path_are_data(text: str) -> None:
    safe = re.sub(r"[\\/\x00]|\.\.", "_", text)  # what a relative notebook path may hold
    notebook = f"dir {safe}/nb {safe}.ipynb"
    spec = RunSpec(notebook=notebook, user=text or "u", tracking={"experiment": text or "e", "tags": {f"t{text}": text}})
    manifest = compile_workflow(spec, cluster=ClusterConfig(mlflow_tracking_uri="http://mlflow:5000"))
    assert _expressions(manifest) == _run_expressions([])
    config = _config(manifest)
    assert (config.notebook, config.user, config.experiment, config.tags) == (spec.notebook, spec.user, spec.experiment, spec.tracking.tags)
    validate_workflow(manifest)  # labels, generateName and the claim name are valid Kubernetes names


def test_pipeline_with_hostile_values_writes_only_its_own_expressions() -> None:
    steps = [
        {"name": "prepare", "notebook": "{{a}}/prep.ipynb", "parameters": {"q": "{{workflow.status}}"}},
        {"name": "train", "notebook": "train.ipynb", "after": ["prepare"], "parameters": {"q": "$(id)", "r": ["}}"]}},
    ]
    spec = PipelineSpec(name="p", user="{{u}}", steps=steps, tracking={"experiment": "{{e}}", "tags": {"k": "{{v}}"}})
    manifest = compile_workflow(spec)
    expected = {
        "{{workflow.name}}", "{{workflow.status}}", "{{workflow.outputs.parameters.mlflow-parent-run-id}}",
        "{{tasks.mlflow-parent.outputs.parameters.run-id}}", "{{inputs.parameters.parent-run-id}}",
        "{{workflow.parameters.prepare-q}}", "{{workflow.parameters.train-q}}", "{{workflow.parameters.train-r}}",
        "{{inputs.parameters.q}}", "{{inputs.parameters.r}}",
    }
    assert _expressions(manifest) == expected
    values = {p["name"]: json.loads(p["value"]) for p in manifest["spec"]["arguments"]["parameters"]}
    assert values == {"prepare-q": "{{workflow.status}}", "train-q": "$(id)", "train-r": ["}}"]}
    assert _config(manifest, "notebook-prepare").notebook == "{{a}}/prep.ipynb"
    assert _config(manifest, "open-parent-run").tags == {"k": "{{v}}", "nbscale.pipeline": "p"}
    validate_workflow(manifest)
