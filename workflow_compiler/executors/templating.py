"""Argo's ``{{...}}`` substitution, for the subset of expressions the compiler writes.

One pass, left to right: text that a substitution inserts is never scanned again, so a value can
never turn into an expression. An expression the scope does not know is an error, as in Argo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ExecutionError

_EXPRESSION = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace every ``{{name}}`` in ``text`` with ``scope[name]``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in scope:
            raise ExecutionError(f"the manifest refers to {{{{{name}}}}}, which is not defined here.")
        return scope[name]

    return _EXPRESSION.sub(replace, text)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    """``substitute`` applied to every string inside lists and dicts."""
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: substitute_all(v, scope) for k, v in value.items()}
    return value
