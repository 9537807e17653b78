"""``--parameter NAME=JSON`` options: decoded exactly, then checked against the notebook's parameters cell."""

from __future__ import annotations

import json
import keyword
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import SpecError

log = logging.getLogger(__name__)

#: MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
MLFLOW_PARAM_LIMIT = 6000


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def decode_parameters(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", 'model="forest"']`` -> ``{"lr": 0.1, "model": "forest"}``; the value after ``=`` is JSON."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier() or keyword.iskeyword(name):
            raise SpecError(f"--parameter {item[:80]!r} is not NAME=JSON with NAME a Python identifier.",
                            errors=[{"loc": ["parameters"], "msg": "expected NAME=JSON"}])
        if name in values:
            raise SpecError(f"parameter {name!r} is given twice.", errors=[{"loc": ["parameters", name], "msg": "given twice"}])
        try:
            values[name] = json.loads(text, parse_constant=_no_constants)
        except ValueError as exc:
            raise SpecError(f"parameter {name!r}: the value is not valid JSON ({exc}). Strings need quotes: {name}=\"text\".",
                            errors=[{"loc": ["parameters", name], "msg": "invalid JSON"}]) from None
    return values


def read_parameters_file(path: Path) -> list[str]:
    """The ``NAME=JSON`` texts of a ``--parameters-file``: a JSON list of strings, as ``--parameter`` takes them."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"--parameters-file {path}: cannot be read as JSON ({exc}). It holds a JSON list of NAME=JSON texts.",
                        errors=[{"loc": ["parameters"], "msg": "unreadable parameters file"}]) from None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SpecError(f"--parameters-file {path}: expected a JSON list of NAME=JSON texts, as --parameter takes them.",
                        errors=[{"loc": ["parameters"], "msg": "expected a list of strings"}])
    return items


def check_parameters(values: dict[str, Any], notebook: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check names and types against the notebook; return (values to inject, every parameter's effective value).

    The second mapping holds defaults (as literal values, or their source text when not literal)
    for the parameters not given, so MLflow shows the full set a run used.
    """
    from ..inspection import inspect_notebook
    from ..params import check_parameters as check_against_signature

    signature = inspect_notebook(notebook)
    checked = check_against_signature(values, signature)
    effective: dict[str, Any] = {}
    for info in signature.parameters:
        if info.name in checked:
            effective[info.name] = checked[info.name]
        else:
            effective[info.name] = info.default if info.default is not None or info.nullable else info.default_source
    return checked, effective


def params_for_mlflow(effective: dict[str, Any]) -> dict[str, str]:
    """Parameter values as MLflow params: strings as they are, anything else as JSON, cut to MLflow's limit."""
    params = {}
    for name, value in effective.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(text) > MLFLOW_PARAM_LIMIT:
            log.warning("parameter %s: %s characters, cut to MLflow's limit of %s", name, len(text), MLFLOW_PARAM_LIMIT)
            text = text[: MLFLOW_PARAM_LIMIT - 1] + "…"
        params[name] = text
    return params
