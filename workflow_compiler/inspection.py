"""Read a notebook and find what its ``parameters`` cell declares, without running any code.

papermill's own ``inspect_notebook`` returns defaults as source text and infers a type only from
annotations; we need typed JSON defaults for forms and validation, so the cell is parsed here with
``ast`` (literals only) and ``tokenize`` (for the trailing help comments).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import io
import json
import logging
import os
import threading
import tokenize
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import NotebookError
from .home_cache import file_identity
from .notebook_schema import plainly_valid

if TYPE_CHECKING:
    import nbformat

log = logging.getLogger(__name__)

ParamType = Literal["int", "float", "str", "bool", "list", "dict", "any"]

#: Annotation names understood in ``x: int = 3``; anything else leaves the type to the literal.
_ANNOTATIONS: dict[str, ParamType] = {
    "int": "int", "float": "float", "str": "str", "bool": "bool",
    "list": "list", "List": "list", "dict": "dict", "Dict": "dict", "Any": "any",
}


# Dataclasses, not pydantic models: they are built here from the parsed cell, never from outside
# input, so there is nothing to validate, and `nbscale inspect` answers without importing pydantic.
@dataclass(frozen=True, kw_only=True)
class ParameterInfo:
    """One parameter of a notebook: its name, type, default and help text."""

    name: str
    type: ParamType
    #: True when ``None`` is an accepted value (a ``None`` default or an ``Optional`` annotation).
    nullable: bool = False
    #: The default as a JSON value; ``None`` also when the default is not a literal.
    default: Any = None
    #: The default's source text, exactly as written in the cell.
    default_source: str = ""
    help: str = ""

    def to_api(self) -> dict[str, Any]:
        """The JSON form the REST API and ``--json`` give."""
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class NotebookSignature:
    """What a notebook takes: its parameters in cell order, and its size in code cells."""

    path: str
    parameters: list[ParameterInfo]
    code_cells: int
    kernel: str = "python3"
    has_parameters_cell: bool = False

    def parameter(self, name: str) -> ParameterInfo | None:
        """The parameter called ``name``, or None."""
        return next((p for p in self.parameters if p.name == name), None)

    def with_path(self, path: str) -> NotebookSignature:
        """The same signature, naming the notebook by ``path`` (relative to the root the user sees)."""
        return dataclasses.replace(self, path=path)

    def to_api(self) -> dict[str, Any]:
        """The JSON form the REST API and ``--json`` give."""
        return dataclasses.asdict(self)


def read_notebook(path: str | Path) -> dict[str, Any]:
    """Read and validate an nbformat v4 notebook, with an error that says what is wrong.

    Returns the notebook's JSON with each cell's source as one string. A notebook that nbformat's
    schema accepts as it is never imports nbformat (``notebook_schema``); any other is read by
    nbformat, which validates, normalizes and words the error.
    """
    p = _checked_notebook_path(path)
    return _parse_notebook(_read_bytes(p)[0], p)


def _checked_notebook_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise NotebookError(f"{p}: no such file. Check the path (it is relative to the working directory).", path=str(p), http_status=404)
    if p.is_dir():
        raise NotebookError(f"{p} is a directory, not a notebook.", path=str(p))
    if p.suffix != ".ipynb":
        raise NotebookError(f"{p} is not a notebook: nbscale runs .ipynb files.", path=str(p))
    return p


def _read_bytes(p: Path) -> tuple[bytes, bytes | None]:
    """The file's bytes and its identity (``home_cache.file_identity``) as of that read, from one open file."""
    with open(p, "rb") as handle:
        identity = file_identity(p, os.fstat(handle.fileno()))
        return handle.read(), identity


def _parse_notebook(raw: bytes, p: Path) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"{p} is not a notebook: it is not UTF-8 text ({exc.reason}).", path=str(p)) from None
    if "\r" in text:  # the newlines text mode would have given (JSON error positions count lines)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        raw_nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Was it saved completely? Try opening it in Jupyter and saving again.", path=str(p)
        ) from None
    if not isinstance(raw_nb, dict) or "cells" not in raw_nb:
        raise NotebookError(f"{p} is JSON but not a notebook: it has no 'cells'.", path=str(p))
    if raw_nb.get("nbformat") != 4:
        raise NotebookError(f"{p} is nbformat {raw_nb.get('nbformat')}; nbscale reads nbformat 4. Open and save it in Jupyter to upgrade.", path=str(p))
    if not plainly_valid(raw_nb):
        return _read_with_nbformat(text, p)
    for cell in raw_nb["cells"]:
        if isinstance(cell["source"], list):  # nbformat joins multi-line sources the same way
            cell["source"] = "".join(cell["source"])
    return raw_nb


def _read_with_nbformat(text: str, p: Path) -> nbformat.NotebookNode:
    import nbformat

    invalid: dict[str, nbformat.ValidationError] = {}
    nb = nbformat.reads(text, as_version=4, capture_validation_error=invalid)  # validates once; joins multi-line sources
    if "ValidationError" in invalid:
        raise NotebookError(f"{p} is not a valid notebook: {invalid['ValidationError'].message}", path=str(p))
    return nb


@dataclass
class _Read:
    """What one read of a notebook file gave: its digest, and its signature once parsed."""

    sha256: str
    signature: NotebookSignature | None = None


# `nbscale run` and `compile` inspect a notebook to build the spec, the compiler inspects it again for
# its defaults and hashes its bytes: one read and one parse serve all three, keyed by the file's
# identity (any change of the file is a new key); a long-lived server keeps the last few.
_READS: OrderedDict[bytes, _Read] = OrderedDict()
_READS_KEPT = 32
_READS_LOCK = threading.Lock()


def _remembered(identity: bytes | None) -> _Read | None:
    if identity is None:
        return None
    with _READS_LOCK:
        return _READS.get(identity)


def _remember(identity: bytes | None, read: _Read) -> None:
    if identity is None:
        return
    with _READS_LOCK:
        _READS[identity] = read
        _READS.move_to_end(identity)
        while len(_READS) > _READS_KEPT:
            _READS.popitem(last=False)


def _identity(p: Path) -> bytes | None:
    try:
        return file_identity(p)
    except OSError:
        return None  # read below, where the error is worded


def inspect_notebook(path: str | Path) -> NotebookSignature:
    """The parameters a notebook declares in its cell tagged ``parameters`` (papermill's convention)."""
    p = _checked_notebook_path(path)
    known = _remembered(_identity(p))
    signature = known.signature if known else None
    if signature is None:
        raw, identity = _read_bytes(p)
        signature = _signature(_parse_notebook(raw, p), path)
        _remember(identity, _Read(hashlib.sha256(raw).hexdigest(), signature))
    # A copy: a caller may change its defaults (lists, dicts) without changing what the next one gets.
    return dataclasses.replace(signature, path=str(path), parameters=copy.deepcopy(signature.parameters))


def notebook_sha256(path: str | Path) -> str:
    """The SHA-256 of the notebook file's bytes (from the same read as ``inspect_notebook``'s when it had one)."""
    p = Path(path)
    known = _remembered(_identity(p))
    if known is None:
        raw, identity = _read_bytes(p)
        known = _Read(hashlib.sha256(raw).hexdigest())
        _remember(identity, known)
    return known.sha256


def _signature(nb: dict[str, Any], path: str | Path) -> NotebookSignature:
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    kernel = nb["metadata"].get("kernelspec", {}).get("name", "python3")
    cell = next((c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return NotebookSignature(path=str(path), parameters=[], code_cells=len(code_cells), kernel=kernel)
    return NotebookSignature(
        path=str(path),
        parameters=parse_parameters_source(cell["source"], where=f"{path}: parameters cell"),
        code_cells=len(code_cells),
        kernel=kernel,
        has_parameters_cell=True,
    )


def parse_parameters_source(source: str, *, where: str = "parameters cell") -> list[ParameterInfo]:
    """Parse the assignments of a parameters cell into typed parameters."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NotebookError(f"{where} has a syntax error on line {exc.lineno}: {exc.msg}.") from None
    comments = _trailing_comments(source)
    found: dict[str, ParameterInfo] = {}
    for node in tree.body:
        value: ast.expr | None
        annotation: ast.expr | None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value, annotation = node.targets[0].id, node.value, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value, annotation = node.target.id, node.value, node.annotation
        else:
            continue  # imports, tuple unpacking and expressions are not parameters
        line = node.end_lineno or node.lineno
        found[name] = _parameter(name, value, annotation, source, help=comments.get(line, ""))
    return list(found.values())


def _parameter(name: str, value: ast.expr | None, annotation: ast.expr | None, source: str, *, help: str) -> ParameterInfo:
    default_source = ast.get_source_segment(source, value) or "" if value is not None else ""
    try:
        default = ast.literal_eval(value) if value is not None else None
        literal = value is not None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        default, literal = None, False
    ptype, nullable = _annotation_type(annotation)
    if ptype is None:
        ptype = _literal_type(default) if literal else "any"
    nullable = nullable or (literal and default is None)
    if literal and isinstance(default, tuple):
        default = list(default)
    if literal and not _json_safe(default):
        default, ptype = None, "any"
    return ParameterInfo(name=name, type=ptype, nullable=nullable, default=default, default_source=default_source, help=help)


def _literal_type(value: Any) -> ParamType:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def _annotation_type(annotation: ast.expr | None) -> tuple[ParamType | None, bool]:
    """``int`` -> ("int", False); ``Optional[int]`` / ``int | None`` -> ("int", True)."""
    if annotation is None:
        return None, False
    if isinstance(annotation, ast.Name):
        return _ANNOTATIONS.get(annotation.id), False
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        if annotation.value.id == "Optional":
            return _annotation_type(annotation.slice)[0], True
        return _ANNOTATIONS.get(annotation.value.id), False
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        sides = [annotation.left, annotation.right]
        if any(isinstance(s, ast.Constant) and s.value is None for s in sides):
            other = next(s for s in sides if not (isinstance(s, ast.Constant) and s.value is None))
            return _annotation_type(other)[0], True
    return None, False


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _trailing_comments(source: str) -> dict[int, str]:
    """Map line number -> the comment that ends that line (the parameter's help text)."""
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        log.debug("could not tokenize parameters cell; help texts skipped")
    return comments
