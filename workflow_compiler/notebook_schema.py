"""Check a notebook against nbformat's own JSON schema without importing nbformat.

Importing nbformat imports jsonschema, and with it the optional format checkers that other Jupyter
packages install (arrow, isoduration, rfc3986, ...): about half of a 0.5 s ``nbscale inspect``.
nbformat itself validates with fastjsonschema and only turns to jsonschema to word an error, so the
fast half is done here the same way, with the same schema file: a notebook that passes
``plainly_valid`` passes nbformat's validation unchanged. Everything else (an invalid notebook,
cells nbformat would give ids to, a minor version from the future) goes to nbformat, which decides
and words its own message.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def schema_file(minor: int) -> Path | None:
    """nbformat's schema for nbformat 4.``minor``, from the installed nbformat (None when it has none)."""
    spec = importlib.util.find_spec("nbformat")  # locates the package without running its __init__
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "v4" / f"nbformat.v4.{minor}.schema.json"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=8)
def _validator(minor: int) -> Callable[[Any], Any] | None:
    import fastjsonschema

    path = schema_file(minor)
    if path is None:
        return None
    return fastjsonschema.compile(json.loads(path.read_text(encoding="utf-8")))  # as nbformat compiles it


def _has_unique_cell_ids(cells: list[Any]) -> bool:
    """nbformat 4.5 and later: nbformat gives missing ids and renames duplicates (with a warning) before validating."""
    ids = [cell.get("id") if isinstance(cell, dict) else None for cell in cells]
    return None not in ids and len(set(map(str, ids))) == len(ids)


def plainly_valid(notebook: dict[str, Any]) -> bool:
    """True when nbformat would accept this nbformat 4 notebook's JSON as it is: valid, with nothing to normalize."""
    import fastjsonschema

    minor = notebook.get("nbformat_minor")
    if type(minor) is not int or minor < 0:
        return False
    cells = notebook.get("cells")
    if not isinstance(cells, list) or (minor >= 5 and not _has_unique_cell_ids(cells)):
        return False
    validate = _validator(minor)
    if validate is None:
        return False
    try:
        validate(notebook)
    except fastjsonschema.JsonSchemaException as exc:
        log.debug("fast notebook validation failed (%s); nbformat decides", exc)
        return False
    return True
