"""Notebook paths that arrive over HTTP: relative, inside the server's root, not hidden."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from workflow_compiler.errors import NotebookError, SpecError
from workflow_compiler.paths import resolve_notebook_path

#: How answers name the server's root folder: its absolute path stays private.
SERVER_ROOT = "the folder this Jupyter server serves"


def check_api_path(value: Any, *, field: str) -> str:
    """Refuse what is not a plain relative path before touching the disk (403 for escapes)."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{field} must be a notebook path relative to the folder this Jupyter server serves, e.g. train.ipynb.",
                        errors=[{"loc": [field], "msg": "a relative notebook path is required"}])
    posix = PurePosixPath(value)
    if posix.is_absolute() or PureWindowsPath(value).is_absolute() or "\\" in value or value.startswith("~"):
        raise NotebookError(f"{value} is an absolute path; give it relative to the folder this Jupyter server serves.", path=value,
                            http_status=403, errors=[{"loc": [field], "msg": "absolute paths are refused"}])
    if ".." in posix.parts:
        raise NotebookError(f"{value} climbs out with '..'; give a path inside the folder this Jupyter server serves.", path=value,
                            http_status=403, errors=[{"loc": [field], "msg": "'..' is refused"}])
    return value


def resolve_api_notebook(value: Any, root: str | os.PathLike[str], *, field: str = "path") -> tuple[Path, str]:
    """The absolute notebook path and its root-relative form; symlinks are followed and must stay inside."""
    check_api_path(value, field=field)
    try:
        return resolve_notebook_path(value, root, root_label=SERVER_ROOT)
    except NotebookError as exc:  # name the request's field, not the spec's
        exc.errors = [{**e, "loc": [field, *e.get("loc", [])[1:]]} for e in exc.errors] or [{"loc": [field], "msg": exc.message}]
        raise
