"""Documented size limits of a spec, the same for the REST API, the CLI and the magics.

A parameter value travels in the run record, the compiled manifest and every ``GET runs`` answer,
so an unbounded one grows the run database and each listing with it. These bounds are generous for
real parameters (a learning rate, a list of layer sizes, a short config) and refuse data smuggled
in as a parameter: pass a path to a file instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Largest JSON encoding of one parameter value, in bytes.
MAX_VALUE_BYTES = 64 * 1024
#: Largest JSON encoding of all of a spec's parameters together, in bytes.
MAX_PARAMETERS_BYTES = 1024 * 1024
#: Most parameters one notebook (or pipeline step) may receive.
MAX_PARAMETERS = 1000
#: Deepest nesting of lists and dicts inside one value (JSON parsers refuse far less than Python builds).
MAX_VALUE_DEPTH = 32
#: Largest REST request body, in bytes (a spec with its parameters, plus room for the rest of the spec).
MAX_BODY_BYTES = MAX_PARAMETERS_BYTES + 64 * 1024

_ADVICE = "pass large data as a file path parameter instead"


def value_depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:  # iterative: a hostile value nested 100,000 deep must not exhaust Python's stack
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_VALUE_DEPTH:
            break
        children = item.values() if isinstance(item, Mapping) else item if isinstance(item, (list, tuple)) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parameter_problems(values: Mapping[str, Any]) -> str | None:
    """What makes these parameters too large, in a sentence that says what to do; None when they fit."""
    if len(values) > MAX_PARAMETERS:
        return f"{len(values)} parameters is more than the {MAX_PARAMETERS} a notebook may receive"
    total = 0
    for name, value in values.items():
        if value_depth(value) > MAX_VALUE_DEPTH:
            return f"parameter {name!r} nests lists or dicts more than {MAX_VALUE_DEPTH} deep; {_ADVICE}"
        size = len(json.dumps(value, default=str).encode())
        if size > MAX_VALUE_BYTES:
            return f"parameter {name!r} is {_kib(size)} as JSON, over the {_kib(MAX_VALUE_BYTES)} limit per value; {_ADVICE}"
        total += size
    if total > MAX_PARAMETERS_BYTES:
        return f"the parameters are {_kib(total)} as JSON together, over the {_kib(MAX_PARAMETERS_BYTES)} limit; {_ADVICE}"
    return None


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB"
