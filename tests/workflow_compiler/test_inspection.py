"""Parameters cells are read with the AST: types, defaults and help, and no code runs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workflow_compiler.errors import NotebookError
from workflow_compiler.inspection import inspect_notebook, parse_parameters_source


def write_notebook(path: Path, parameters: str | None, *more: str) -> Path:
    cells = []
    if parameters is not None:
        cell = new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        cells.append(cell)
    cells += [new_code_cell(src) for src in more]
    nbformat.write(new_notebook(cells=cells), path)
    return path


@pytest.mark.parametrize(
    ("source", "name", "ptype", "nullable", "default", "help"),
    [
        ("n = 100  # trees", "n", "int", False, 100, "trees"),
        ("lr = 1e-3", "lr", "float", False, 0.001, ""),
        ("model = 'forest'  # forest or boosting", "model", "str", False, "forest", "forest or boosting"),
        ("flag = True", "flag", "bool", False, True, ""),
        ("depth = None  # any depth", "depth", "any", True, None, "any depth"),
        ("depth: int | None = None", "depth", "int", True, None, ""),
        ("depth: Optional[int] = 3", "depth", "int", True, 3, ""),
        ("sizes = (1, 2)", "sizes", "list", False, [1, 2], ""),
        ("cfg = {'a': [1, 2]}", "cfg", "dict", False, {"a": [1, 2]}, ""),
        ("rate: float = 1", "rate", "float", False, 1, ""),
        ("x = -5", "x", "int", False, -5, ""),
        ("arr = make_array(3)  # computed", "arr", "any", False, None, "computed"),
    ],
)
def test_parameter_types_defaults_and_help(source, name, ptype, nullable, default, help):
    (param,) = parse_parameters_source(source)
    assert (param.name, param.type, param.nullable, param.default, param.help) == (name, ptype, nullable, default, help)


def test_non_literal_default_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    (p,) = parse_parameters_source(f"x = open({str(marker)!r}, 'w').write('boom')")
    assert p.type == "any" and not marker.exists()
    assert p.default_source.startswith("open(")


def test_imports_and_unpacking_are_not_parameters():
    params = parse_parameters_source("import os\na, b = 1, 2\nc = 3\nprint(c)\nc = 4  # redefined")
    assert [(p.name, p.default, p.help) for p in params] == [("c", 4, "redefined")]


def test_notebook_without_parameters_cell_takes_none(tmp_path):
    sig = inspect_notebook(write_notebook(tmp_path / "plain.ipynb", None, "print(1)"))
    assert sig.parameters == [] and not sig.has_parameters_cell and sig.code_cells == 1


def test_example_train_notebook():
    sig = inspect_notebook(Path(__file__).parents[2] / "examples" / "train.ipynb")
    by_name = {p.name: p for p in sig.parameters}
    assert by_name["n_estimators"].type == "int" and by_name["n_estimators"].default == 100
    assert by_name["max_depth"].nullable and by_name["max_depth"].type == "int"
    assert "trees" in by_name["n_estimators"].help


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        ("{not json", "bad.ipynb", "not valid JSON (line 1"),
        ('{"hello": 1}', "bad.ipynb", "has no 'cells'"),
        ('{"cells": [], "nbformat": 3, "nbformat_minor": 0, "metadata": {}}', "old.ipynb", "nbformat 3"),
        ("print('hi')", "script.py", "is not a notebook"),
        (b"\xff\xfe\x00", "binary.ipynb", "not UTF-8"),
    ],
)
def test_invalid_notebooks_have_specific_errors(tmp_path, content, filename, message):
    path = tmp_path / filename
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(NotebookError, match=message.replace("(", r"\(")):
        inspect_notebook(path)


def test_missing_notebook(tmp_path):
    with pytest.raises(NotebookError, match="no such file") as info:
        inspect_notebook(tmp_path / "nope.ipynb")
    assert info.value.http_status == 404


def test_syntax_error_in_parameters_cell(tmp_path):
    with pytest.raises(NotebookError, match="syntax error on line 2"):
        inspect_notebook(write_notebook(tmp_path / "s.ipynb", "a = 1\nb = = 2"))


def test_schema_invalid_cell_is_reported(tmp_path):
    nb = json.loads(nbformat.writes(new_notebook(cells=[new_code_cell("1")])))
    nb["cells"][0]["cell_type"] = "potato"
    (tmp_path / "v.ipynb").write_text(json.dumps(nb))
    with pytest.raises(NotebookError, match="not a valid notebook"):
        inspect_notebook(tmp_path / "v.ipynb")
