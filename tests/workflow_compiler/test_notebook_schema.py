"""The fast notebook check agrees with nbformat: what it passes, nbformat passes unchanged (issue 19)."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from workflow_compiler import inspection, notebook_schema
from workflow_compiler.notebook_schema import plainly_valid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _notebook() -> dict[str, Any]:
    params = new_code_cell("lr = 0.1  # step\nepochs: int = 3")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# title"), params, new_code_cell("print(lr)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    data: dict[str, Any] = json.loads(nbformat.writes(nb))  # sources become lists of lines, as saved
    return data


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(nb: dict[str, Any]) -> None:
        target = nb
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _drop_ids(nb: dict[str, Any]) -> None:
    for cell in nb["cells"]:
        cell.pop("id")


def _older_minor(nb: dict[str, Any]) -> None:
    _drop_ids(nb)
    nb["nbformat_minor"] = 4


@pytest.mark.parametrize(("change", "fast"), [
    (lambda nb: None, True),
    (_older_minor, True),  # 4.4 had no cell ids: its own schema applies
    (_drop_ids, False),  # nbformat would give them ids, with a warning
    (_set(("cells", 2, "id"), "same"), True),
    (lambda nb: nb["cells"][1].update(id=nb["cells"][0]["id"]), False),  # nbformat renames a duplicate, with a warning
    (_set(("cells", 0, "cell_type"), "potato"), False),
    (_set(("cells", 1, "source"), 3), False),
    (_set(("metadata", "kernelspec"), {"display_name": "no name"}), False),
    (_set(("nbformat_minor",), 9), False),  # from the future: nbformat relaxes its schema
    (_set(("nbformat_minor",), "5"), False),
    (_set(("cells",), {}), False),
])
def test_fast_check_passes_only_what_nbformat_accepts_unchanged(change: Callable[[dict[str, Any]], None], fast: bool) -> None:
    nb = _notebook()
    change(nb)
    assert plainly_valid(copy.deepcopy(nb)) is fast
    if fast:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no normalizing either: it warns
            before = copy.deepcopy(nb)
            nbformat.validate(nb)
            assert nb == before


@pytest.mark.parametrize("name", ["train.ipynb", "prepare.ipynb"])
def test_fast_and_nbformat_reads_give_the_same_signature(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = EXAMPLES / name
    assert plainly_valid(json.loads(path.read_text(encoding="utf-8")))
    fast = inspection.inspect_notebook(path)
    monkeypatch.setattr(inspection, "plainly_valid", lambda nb: False)
    assert inspection.inspect_notebook(path) == fast


def test_notebook_nbformat_must_normalize_is_still_read(tmp_path: Path) -> None:
    nb = _notebook()
    _drop_ids(nb)
    (tmp_path / "old.ipynb").write_text(json.dumps(nb))
    with pytest.warns(nbformat.warnings.MissingIDFieldWarning):
        signature = inspection.inspect_notebook(tmp_path / "old.ipynb")
    assert [p.name for p in signature.parameters] == ["lr", "epochs"] and signature.code_cells == 2


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o700)
    notebook_schema._validator.cache_clear()
    yield tmp_path / "home"
    notebook_schema._validator.cache_clear()


def test_compiled_validator_is_cached_privately_and_a_damaged_copy_is_rebuilt(home: Path) -> None:
    assert plainly_valid(_notebook())
    (cached,) = (home / "cache").glob("nbformat-validator-*.marshal")
    assert cached.stat().st_mode & 0o777 == 0o600
    cached.write_bytes(b"\x00damaged")
    notebook_schema._validator.cache_clear()
    bad = _notebook()
    bad["cells"][0]["cell_type"] = "potato"
    assert plainly_valid(_notebook()) and not plainly_valid(bad)
    assert cached.read_bytes() != b"\x00damaged"


def test_a_home_others_can_write_is_not_used_and_notebooks_are_still_checked(home: Path) -> None:
    home.chmod(0o777)
    bad = _notebook()
    bad["cells"][0]["cell_type"] = "potato"
    assert plainly_valid(_notebook()) and not plainly_valid(bad)
    assert not (home / "cache").exists()


def test_reading_a_notebook_never_creates_the_home(home: Path) -> None:
    home.rmdir()
    assert plainly_valid(_notebook())
    assert not home.exists()
