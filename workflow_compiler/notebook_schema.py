"""Check a notebook against nbformat's own JSON schema without importing nbformat.

Importing nbformat imports jsonschema, and with it the optional format checkers that other Jupyter
packages install (arrow, isoduration, rfc3986, ...): about half of a 0.5 s ``nbscale inspect``.
nbformat itself validates with fastjsonschema and only turns to jsonschema to word an error, so the
fast half is done here the same way, with the same schema file: a notebook that passes
``plainly_valid`` passes nbformat's validation unchanged. Everything else (an invalid notebook,
cells nbformat would give ids to, a minor version from the future) goes to nbformat, which decides
and words its own message.

fastjsonschema turns the schema into Python source and compiles it: ~60 ms a process. The compiled
code is kept under ``$NBSCALE_HOME/cache`` when that home exists (``home_cache.py``: private to the
user, like Python's own ``__pycache__``), keyed by the schema's bytes, fastjsonschema's version and
Python's bytecode version.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import marshal
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

from .home_cache import cached_in_home

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
    path = schema_file(minor)
    if path is None:
        return None
    namespace: dict[str, Any] = {}
    exec(_validator_code(path.read_bytes()), namespace)  # noqa: S102 -- fastjsonschema's code for nbformat's schema
    validate: Callable[[Any], Any] = namespace["validate"]
    return validate


def _validator_code(schema: bytes) -> CodeType:
    """The compiled validator of ``schema`` (what ``fastjsonschema.compile`` runs), from the cache when it is there."""
    import fastjsonschema

    def make() -> CodeType:
        return compile(fastjsonschema.compile_to_code(json.loads(schema)), "<nbformat schema validator>", "exec")

    key = schema + fastjsonschema.VERSION.encode() + importlib.util.MAGIC_NUMBER
    return cached_in_home("nbformat-validator", key, make, dump=marshal.dumps, load=_code_object, suffix=".marshal")


def _code_object(data: bytes) -> CodeType:
    code = marshal.loads(data)
    if not isinstance(code, CodeType):
        raise TypeError(f"a cached validator holds a {type(code).__name__}, not code")
    return code


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
