"""RunSpec and PipelineSpec: typed parameters, clear errors, paths kept inside the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_compiler.errors import NotebookError, SpecError
from workflow_compiler.inspection import ParameterInfo
from workflow_compiler.params import coerce_json, coerce_text
from workflow_compiler.spec import PipelineSpec, RunSpec, build_run_spec, check_run_spec, load_pipeline, parse_model, spec_json_schemas

ROOT = Path(__file__).resolve().parents[2]

INT = ParameterInfo(name="n", type="int")
FLOAT = ParameterInfo(name="lr", type="float")
STR = ParameterInfo(name="model", type="str")
BOOL = ParameterInfo(name="flag", type="bool")
OPT_INT = ParameterInfo(name="depth", type="int", nullable=True)
LIST = ParameterInfo(name="sizes", type="list")
ANY = ParameterInfo(name="x", type="any", nullable=True)


@pytest.mark.parametrize(
    ("info", "text", "value"),
    [
        (INT, "200", 200), (INT, " 7 ", 7), (FLOAT, "0.5", 0.5), (FLOAT, "3", 3.0), (FLOAT, "1e-3", 0.001),
        (STR, "forest", "forest"), (STR, " spaced ", " spaced "), (STR, "None", "None"),
        (BOOL, "true", True), (BOOL, "No", False), (OPT_INT, "None", None), (OPT_INT, "4", 4),
        (LIST, "[1, 2]", [1, 2]), (LIST, "(1, 'a')", [1, "a"]), (ANY, "3", 3), (ANY, "hello", "hello"), (ANY, "null", None),
    ],
)
def test_cli_text_becomes_the_declared_type(info, text, value):
    result = coerce_text(info, text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(
    ("info", "text"),
    [(INT, "2.5"), (INT, "ten"), (FLOAT, "fast"), (FLOAT, "nan"), (BOOL, "maybe"), (LIST, "{'a': 1}"), (LIST, "[1,"), (INT, "None")],
)
def test_wrong_type_names_parameter_and_expected_type(info, text):
    with pytest.raises(SpecError) as exc:
        coerce_text(info, text)
    assert repr(info.name) in exc.value.message and f"expects {info.type}" in exc.value.message
    assert exc.value.errors[0]["loc"] == ["parameters", info.name]


@pytest.mark.parametrize(("info", "value"), [(INT, True), (INT, 1.5), (STR, 3), (BOOL, "true"), (FLOAT, "1"), (LIST, {"a": 1}), (STR, None)])
def test_json_values_are_type_checked(info, value):
    with pytest.raises(SpecError, match=f"expects {info.type}"):
        coerce_json(info, value)


def test_build_run_spec_from_cli_parameters(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = build_run_spec("examples/train.ipynb", cli_parameters=["n_estimators=200", "model=forest", "max_depth=None"])
    assert spec.parameters == {"n_estimators": 200, "model": "forest", "max_depth": None}
    assert spec.notebook == "examples/train.ipynb" and spec.experiment == "train"


def test_unknown_parameter_lists_known_ones():
    with pytest.raises(SpecError, match=r"unknown parameter 'n_estimator'.*Known parameters: model, n_estimators"):
        build_run_spec("examples/train.ipynb", root=ROOT, cli_parameters=["n_estimator=5"])


@pytest.mark.parametrize(("given", "guess"), [("n_estimator", " Did you mean 'n_estimators'?"), ("seeed", " Did you mean 'seed'?"),
                                              ("zzz", "")])
def test_unknown_parameter_suggests_the_closest(given, guess):
    with pytest.raises(SpecError) as caught:
        build_run_spec("examples/train.ipynb", root=ROOT, cli_parameters=[f"{given}=5"])
    assert caught.value.message.endswith(f"report_steps.{guess}")


def test_an_unknown_swept_parameter_suggests_the_closest():
    from workflow_compiler.inspection import inspect_notebook
    from workflow_compiler.sweep.space import check_space, parse_domain_text

    with pytest.raises(SpecError, match=r"sweep parameter 'max_dept' is not a parameter .* Did you mean 'max_depth'\?$"):
        check_space({"max_dept": parse_domain_text("grid(3, 5)")}, inspect_notebook(ROOT / "examples/train.ipynb"))


@pytest.mark.parametrize("bad", ["n_estimators", "=5", "2x=1", "a-b=1"])
def test_malformed_assignments(bad):
    with pytest.raises(SpecError, match="NAME=VALUE|identifier"):
        build_run_spec("examples/train.ipynb", root=ROOT, cli_parameters=[bad])


@pytest.mark.parametrize(
    ("path", "message", "status"),
    [("../etc/passwd.ipynb", "outside the working directory", 403), ("/etc/hosts", "outside the working directory", 403),
     (".venv/x.ipynb", "hidden", 403), ("examples/missing.ipynb", "no such file", 404)],
)
def test_paths_outside_root_hidden_or_missing(path, message, status):
    with pytest.raises(NotebookError, match=message) as exc:
        build_run_spec(path, root=ROOT)
    assert exc.value.http_status == status


def test_symlink_out_of_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "nb.ipynb").write_text((ROOT / "examples" / "prepare.ipynb").read_text())
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.ipynb").symlink_to(outside / "nb.ipynb")
    with pytest.raises(NotebookError, match="outside"):
        build_run_spec("link.ipynb", root=root)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"notebook": "a.ipynb", "resources": {"gpus": -1}}, ["resources", "gpus"]),
        ({"notebook": "a.ipynb", "resources": {"memory": "lots"}}, ["resources", "memory"]),
        ({"notebook": "a.ipynb", "resources": {"pool": "A100!"}}, ["resources", "pool"]),
        ({"notebook": "a.ipynb", "retries": 99}, ["retries"]),
        ({"notebook": "a.ipynb", "colour": "red"}, ["colour"]),
        ({"notebook": "../a.ipynb"}, ["notebook"]),
        ({"notebook": "a.py"}, ["notebook"]),
        ({"notebook": "a.ipynb", "parameters": {"not-valid": 1}}, ["parameters"]),
        ({}, ["notebook"]),
    ],
)
def test_invalid_spec_fields_are_named(body, loc):
    with pytest.raises(SpecError) as exc:
        parse_model(RunSpec, body, what="run spec")
    assert loc in [e["loc"] for e in exc.value.errors]


def test_check_run_spec_types_a_rest_body():
    spec = parse_model(RunSpec, {"notebook": "examples/train.ipynb", "parameters": {"learning_rate": 1}}, what="run spec")
    assert check_run_spec(spec, root=ROOT).parameters == {"learning_rate": 1.0}
    bad = parse_model(RunSpec, {"notebook": "examples/train.ipynb", "parameters": {"seed": "42"}}, what="run spec")
    with pytest.raises(SpecError, match="'seed' expects int"):
        check_run_spec(bad, root=ROOT)


def test_example_pipeline_loads_in_dependency_order():
    spec = load_pipeline("examples/pipeline.yaml", root=ROOT)
    assert [s.name for s in spec.order()] == ["prepare", "train"]
    assert spec.steps[1].notebook == "examples/train.ipynb" and spec.steps[1].parameters["n_estimators"] == 60


def _pipeline(tmp_path: Path, text: str) -> Path:
    (tmp_path / "prepare.ipynb").write_text((ROOT / "examples" / "prepare.ipynb").read_text())
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps:\n- {name: a, notebook: prepare.ipynb, after: [b]}\n- {name: b, notebook: prepare.ipynb, after: [a]}\n", "form a cycle"),
        ("steps:\n- {name: a, notebook: prepare.ipynb, after: [ghost]}\n", "unknown step.*'ghost'"),
        ("steps:\n- {name: a, notebook: prepare.ipynb}\n- {name: a, notebook: prepare.ipynb}\n", "unique; repeated: a"),
        ("steps:\n- {name: a, notebook: prepare.ipynb, parameters: {seed: x}}\n", "step 'a'.*'seed' expects int"),
        ("steps:\n- {name: a, notebook: prepare.ipynb, parameters: {sed: 1}}\n", "unknown parameter 'sed'"),
        ("steps:\n- {name: a, notebook: ../../x.ipynb}\n", "outside the working directory"),
        ("steps: [\n", "not valid YAML"),
        ("- just a list\n", "must hold a mapping"),
        ("steps:\n- {name: a, notebook: prepare.ipynb, parameters: !!python/object:os.system {}}\n", "not valid YAML"),
        ("steps: []\n", "steps"),
    ],
)
def test_bad_pipelines_are_refused(tmp_path, text, message):
    with pytest.raises((SpecError, NotebookError), match=message):
        load_pipeline(_pipeline(tmp_path, text), root=tmp_path)


def test_json_schemas_are_exported():
    schemas = spec_json_schemas()
    assert "notebook" in schemas["run"]["properties"] and "steps" in schemas["pipeline"]["properties"]
    assert PipelineSpec.model_json_schema()["required"] == ["name", "steps"]


@pytest.mark.parametrize(
    ("parameters", "words"),
    [
        ({"n_estimators": "9" * (64 * 1024 + 1)}, "limit per value"),
        ({f"p{i}": 1 for i in range(1001)}, "the 1000 a notebook may receive"),
        ({"learning_rate": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "32 deep"),
        ({f"p{i}": "x" * 60_000 for i in range(20)}, "together"),
    ],
)
def test_the_spec_model_bounds_parameters_for_every_caller(parameters, words):
    """The REST API, the CLI and the magics all build a RunSpec, so its limits hold for each of them."""
    with pytest.raises(SpecError, match=words) as caught:
        parse_model(RunSpec, {"notebook": "train.ipynb", "parameters": parameters}, what="run spec")
    assert caught.value.errors[0]["loc"] == ["parameters"]
    assert "Value error" not in caught.value.message


def test_an_unknown_cli_parameter_names_the_notebook_as_typed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.ipynb").write_text((ROOT / "examples" / "train.ipynb").read_text())
    with pytest.raises(SpecError) as caught:
        build_run_spec("sub/train.ipynb", root=tmp_path, cli_parameters=["nope=1"])
    assert caught.value.message.startswith("unknown parameter 'nope' for sub/train.ipynb.")


@pytest.mark.parametrize(
    ("body", "loc", "msg"),
    [
        ({"notebook": "a.ipynb", "resources": {"memory": "lots"}}, ["resources", "memory"], "must be a Kubernetes quantity"),
        ({"notebook": "a.ipynb", "resources": {"pool": "A100"}}, ["resources", "pool"], "must be lowercase letters, digits and '-'"),
        ({"notebook": "a.ipynb", "image": "two words"}, ["image"], "must be one word without spaces"),
        ({}, ["notebook"], "required"),
        ({"notebook": "a.ipynb", "sweep": {"space": {}, "metric": "m", "mode": "max"}}, ["sweep", "space"], "must have at least 1 item"),
    ],
)
def test_field_messages_are_plain_words(body, loc, msg):
    """What the dialog shows next to a field: no regular expression, no pydantic jargon."""
    with pytest.raises(SpecError) as caught:
        parse_model(RunSpec, body, what="run spec")
    (error,) = [e for e in caught.value.errors if e["loc"] == loc]
    assert error["msg"].startswith(msg)
    assert not any(jargon in error["msg"] for jargon in ("^", "$", "[0-9]", "Field required", "Dictionary", "String should"))
