"""Check a notebook against nbformat's own JSON schema without importing nbformat.

Importing nbformat imports jsonschema, and with it the optional format checkers that other Jupyter
packages install (arrow, isoduration, rfc3986, ...): about half of a 0.5 s ``nbscale inspect``.
nbformat itself validates with fastjsonschema and only turns to jsonschema to word an error, so the
fast half is done here the same way, with the same schema file: a notebook that passes
``plainly_valid`` passes nbformat's validation unchanged. Everything else (an invalid notebook,
cells nbformat would give ids to, a minor version from the future) goes to nbformat, which decides
and words its own message.

fastjsonschema turns the schema into Python source and compiles it: ~60 ms a process. The compiled
code is kept under ``$NBSCALE_HOME/cache`` when that home exists (private to the user, like Python's
own ``__pycache__``), keyed by the schema's bytes, fastjsonschema's version and Python's bytecode
version.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import marshal
from collections.abc import Callable
from pathlib import Path
from types import CodeType
from typing import Any

from .errors import NbscaleError
from .private_files import private_folder, private_home, write_private
from .tracking_uri import nbscale_home

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

    key = hashlib.sha256(schema + fastjsonschema.VERSION.encode() + importlib.util.MAGIC_NUMBER).hexdigest()[:20]
    home, cache = nbscale_home(), None
    try:
        if home.is_dir():  # reading a notebook never creates the home (a step in a pod, a first inspect)
            cache = private_home(home) / "cache" / f"nbformat-validator-{key}.marshal"
    except (NbscaleError, OSError) as exc:  # a home that is not private is neither read nor written; inspect still works
        log.debug("not caching the notebook validator: %s", exc)
    if cache is not None:
        try:
            code = marshal.loads(cache.read_bytes())
            if isinstance(code, CodeType):
                return code
        except (OSError, ValueError, EOFError, TypeError):
            pass
    code = compile(fastjsonschema.compile_to_code(json.loads(schema)), "<nbformat schema validator>", "exec")
    if cache is not None:
        try:
            private_folder(cache.parent)
            write_private(cache, marshal.dumps(code))  # atomic: concurrent processes never read half a file
        except (OSError, NbscaleError) as exc:
            log.debug("could not cache the notebook validator: %s", exc)
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
