"""The one parameter parser: ``name=value`` from the CLI and magics, JSON values from REST and YAML.

Every value is checked against the type the notebook declares, and every error names the
parameter and the type it expects.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import SpecError
from .inspection import NotebookSignature, ParameterInfo

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NULL = {"none", "null"}


def split_assignment(text: str) -> tuple[str, str]:
    """``"lr=0.1"`` -> ``("lr", "0.1")``. Only the first ``=`` splits, so values may contain ``=``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise SpecError(f"parameter {text!r} is not NAME=VALUE (for example -p n_estimators=200).",
                        errors=[{"loc": ["parameters"], "msg": "expected NAME=VALUE"}])
    if not name.isidentifier():
        raise SpecError(f"parameter name {name!r} is not a Python identifier.",
                        errors=[{"loc": ["parameters", name], "msg": "not a Python identifier"}])
    return name, value


def parse_cli_parameters(items: Iterable[str], signature: NotebookSignature) -> dict[str, Any]:
    """Parse repeated ``-p NAME=VALUE`` options into typed values for this notebook."""
    raw: dict[str, str] = {}
    for item in items:
        name, value = split_assignment(item)
        raw[name] = value
    return {name: coerce_text(lookup_parameter(signature, name), value) for name, value in raw.items()}


def check_parameters(values: Mapping[str, Any], signature: NotebookSignature) -> dict[str, Any]:
    """Check JSON-typed values (REST body, pipeline YAML) against the notebook; return them normalised."""
    return {name: coerce_json(lookup_parameter(signature, name), value) for name, value in values.items()}


def lookup_parameter(signature: NotebookSignature, name: str, *, loc: tuple[str, ...] = ("parameters",),
                     unknown: str = "") -> ParameterInfo:
    """The notebook's parameter ``name``; else a SpecError listing the known ones and the closest (a typo).

    ``unknown`` replaces the message's opening ("unknown parameter 'x' for nb.ipynb").
    """
    info = signature.parameter(name)
    if info is None:
        import difflib  # only to suggest a name after a typo: every spec imports this module

        names = [p.name for p in signature.parameters]
        known = ", ".join(names) or "none: the notebook has no cell tagged 'parameters'"
        close = difflib.get_close_matches(name, names, n=1)
        guess = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(
            f"{unknown or f'unknown parameter {name!r} for {signature.path}'}. Known parameters: {known}.{guess}",
            errors=[{"loc": [*loc, name], "msg": f"unknown parameter; known: {known}"}],
        )
    return info


def _type_error(info: ParameterInfo, value: Any) -> SpecError:
    expected = info.type + (" or None" if info.nullable else "")
    shown = value if isinstance(value, str) else json.dumps(value, default=repr)
    msg = f"parameter {info.name!r} expects {expected}, got {shown!r}"
    return SpecError(msg + ".", errors=[{"loc": ["parameters", info.name], "msg": f"expected {expected}"}])


def coerce_text(info: ParameterInfo, text: str) -> Any:
    """Turn the text after ``NAME=`` into a value of the parameter's type."""
    low = text.strip().lower()
    if info.nullable and low in _NULL:
        return None
    if info.type == "str":
        return text  # byte for byte: a string parameter takes the text exactly as given
    if info.type == "int":
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise _type_error(info, text) from None
    if info.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise _type_error(info, text) from None
        if not math.isfinite(value):
            raise _type_error(info, text)
        return value
    if info.type == "bool":
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _type_error(info, text)
    if info.type in ("list", "dict"):
        return coerce_json(info, _parse_structured(info, text))
    return _parse_any(text)


def _parse_structured(info: ParameterInfo, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)  # Python literals such as [1, 2] or {'a': (1, 2)}; never eval
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise _type_error(info, text) from None


def _parse_any(text: str) -> Any:
    """An untyped parameter: a JSON literal when the text is one, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def coerce_json(info: ParameterInfo, value: Any) -> Any:
    """Check a JSON value against the parameter's type (ints are accepted where floats are)."""
    if value is None:
        if info.nullable or info.type == "any":
            return None
        raise _type_error(info, value)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, (list, tuple)),
        "dict": isinstance(value, dict) and all(isinstance(k, str) for k in value),
        "any": True,
    }[info.type]
    if not ok:
        raise _type_error(info, value)
    if info.type == "float":
        if not math.isfinite(value):
            raise _type_error(info, value)
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise _type_error(info, value) from None
    return value
