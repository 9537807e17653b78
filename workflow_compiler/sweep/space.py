"""Search spaces: ``choice``, ``grid``, ``uniform``, ``quniform``, ``loguniform`` and ``randint``.

One syntax everywhere. The CLI and YAML take the call form ``randint(50, 400)``; JSON and YAML
also take ``{"randint": [50, 400]}`` and the canonical ``{"kind": "randint", "low": 50,
"high": 400}``. Text is parsed with ``ast`` and only literals are accepted (never ``eval``).
``null``/``true``/``false`` are accepted as well as ``None``/``True``/``False``, so the same text
works in Python-minded and JSON-minded hands.

``randint(low, high)`` includes both ends, like Python's ``random.randint``.
"""

from __future__ import annotations

import ast
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ..errors import SpecError
from ..inspection import NotebookSignature, ParameterInfo
from ..params import coerce_json, lookup_parameter

Kind = Literal["choice", "grid", "uniform", "quniform", "loguniform", "randint"]
KINDS: tuple[str, ...] = ("choice", "grid", "uniform", "quniform", "loguniform", "randint")
_VALUE_KINDS = ("choice", "grid")
_ARITY = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3}
_EXAMPLES = {
    "choice": "choice(3, 5, 8, None)",
    "grid": "grid(0.01, 0.1, 1.0)",
    "uniform": "uniform(0.1, 0.9)",
    "quniform": "quniform(0.0, 1.0, 0.05)",
    "loguniform": "loguniform(1e-4, 0.1)",
    "randint": "randint(50, 400)",
}
_NAMED_CONSTANTS = {"None": None, "null": None, "True": True, "true": True, "False": False, "false": False}


class Domain(BaseModel):
    """The values one parameter may take in a sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    values: list[Any] | None = None
    low: float | int | None = None
    high: float | int | None = None
    q: float | int | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_domain_text(data).model_dump(exclude_none=True)
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in KINDS:
            kind, args = next(iter(data.items()))
            return _fields_from_args(kind, args if isinstance(args, list) else [args])
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> Domain:
        _check_domain(self)
        return self

    def to_text(self) -> str:
        """The call form, e.g. ``randint(50, 400)``; parsing it gives this domain back."""
        if self.kind in _VALUE_KINDS:
            return f"{self.kind}({', '.join(_literal_text(v) for v in self.values or [])})"
        args = [self.low, self.high] + ([self.q] if self.kind == "quniform" else [])
        return f"{self.kind}({', '.join(repr(a) for a in args)})"

    def grid_values(self) -> list[Any]:
        """The values a ``grid(...)`` axis enumerates (and a ``choice(...)`` axis, in a grid search)."""
        if self.kind not in _VALUE_KINDS:
            raise SpecError(f"{self.to_text()} is continuous; a grid search needs grid(...) or choice(...) for every parameter.")
        return list(self.values or [])

    def to_tune(self, *, enumerate_values: bool = False) -> Any:
        """The Ray Tune sampler for this domain (imported lazily: ray is heavy); ``enumerate_values``
        makes a ``choice(...)`` a ``grid_search`` too (a grid search crosses it, ``SweepSpec.enumerates``)."""
        from ray import tune

        if self.kind == "grid" or (enumerate_values and self.kind == "choice"):
            return tune.grid_search(list(self.values or []))
        if self.kind == "choice":
            return tune.choice(list(self.values or []))
        low, high, q = self.low, self.high, self.q
        assert low is not None and high is not None  # _check_domain requires both for every continuous kind
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        if self.kind == "randint":
            return tune.randint(int(low), int(high) + 1)  # tune's upper bound is exclusive
        assert q is not None  # _check_domain requires q for quniform, the only kind left
        if _all_whole(low, high, q) and isinstance(low, int):
            return tune.qrandint(int(low), int(high), int(q))
        return tune.quniform(low, high, q)


def _bad(message: str) -> SpecError:
    return SpecError(message, errors=[{"loc": ["sweep", "space"], "msg": message}])


def parse_domain_text(text: str) -> Domain:
    """Parse ``kind(arg, ...)`` safely with ``ast``; raise SpecError with an example when wrong."""
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise _bad(f"{text!r} is not a search space: write it as a call, for example {_EXAMPLES['randint']}.") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise _bad(f"{text!r} is not a search space: write it as a call, for example {_EXAMPLES['randint']}.")
    kind = call.func.id
    if kind not in KINDS:
        raise _bad(f"unknown search space {kind!r} in {text!r}; use one of {', '.join(KINDS)} (e.g. {_EXAMPLES['loguniform']}).")
    if call.keywords:
        raise _bad(f"{text!r}: pass arguments by position, for example {_EXAMPLES[kind]}.")
    args = [_literal(node, text) for node in call.args]
    if kind in _VALUE_KINDS and len(args) == 1 and isinstance(args[0], list):
        args = args[0]  # Ray Tune's spelling: choice([3, 5, 8])
    try:
        return Domain.model_validate(_fields_from_args(kind, args))
    except ValidationError as exc:
        raise _bad("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()) + ".") from None


def _literal(node: ast.expr, text: str) -> Any:
    """A literal value from the AST; names other than None/null/True/true/False/false are refused."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    shown = ast.get_source_segment(text.strip(), node) or ast.dump(node)
    raise _bad(f"{text!r}: {shown!r} is not a literal; arguments must be numbers, strings, None, True/False or lists of them.")


def _fields_from_args(kind: str, args: list[Any]) -> dict[str, Any]:
    if kind in _VALUE_KINDS:
        return {"kind": kind, "values": list(args)}
    arity = _ARITY[kind]
    if len(args) != arity:
        names = "low, high, q" if arity == 3 else "low, high"
        raise _bad(f"{kind} takes {arity} arguments ({names}), got {len(args)}; for example {_EXAMPLES[kind]}.")
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            raise _bad(f"{kind} bounds must be numbers, got {arg!r}; for example {_EXAMPLES[kind]}.")
    fields: dict[str, Any] = {"kind": kind, "low": args[0], "high": args[1]}
    if arity == 3:
        fields["q"] = args[2]
    return fields


def _check_domain(d: Domain) -> None:
    """Raise ValueError with a fix for bad bounds (pydantic turns it into a field error)."""
    text = f"{d.kind}(...)"
    if d.kind in _VALUE_KINDS:
        if not d.values:
            raise ValueError(f"{d.kind}() needs at least one value, for example {_EXAMPLES[d.kind]}")
        if d.low is not None or d.high is not None or d.q is not None:
            raise ValueError(f"{d.kind} takes values only, not low/high/q")
        return
    if d.values is not None:
        raise ValueError(f"{d.kind} takes low and high, not values; for a list of values use choice(...)")
    if d.low is None or d.high is None:
        raise ValueError(f"{d.kind} needs low and high, for example {_EXAMPLES[d.kind]}")
    low, high = d.low, d.high
    text = d.to_text()
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{text}: bounds must be finite numbers")
    if d.kind == "randint" and not _all_whole(low, high):
        raise ValueError(f"{text}: randint takes whole numbers, for example randint({math.floor(low)}, {math.ceil(high)})")
    if low >= high:
        q = f", {d.q!r}" if d.q is not None else ""
        hint = f"swap them: {d.kind}({high!r}, {low!r}{q})" if low > high else "widen the range or use choice(...) for one value"
        raise ValueError(f"{text}: low ({low!r}) must be less than high ({high!r}); {hint}")
    if d.kind == "loguniform" and low <= 0:
        raise ValueError(f"{text}: a log scale needs 0 < low < high (no zero or negatives); for example loguniform({high / 1000:g}, {high!r})")
    if d.kind == "quniform":
        if d.q is None or not math.isfinite(d.q) or d.q <= 0:
            raise ValueError(f"{text}: the step q must be a positive number, for example {_EXAMPLES['quniform']}")
        if d.q > high - low:
            raise ValueError(f"{text}: the step q ({d.q!r}) is larger than the range high - low ({high - low!r}); use a smaller q")
    elif d.q is not None:
        raise ValueError(f"{text}: only quniform takes a step q")


def _all_whole(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() for v in values)


def distinct_values(values: list[Any]) -> list[Any]:
    """``values`` without repeats, in order (compared as JSON: values may be lists or dicts, which do not hash)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(json.dumps(value, sort_keys=True, default=repr), value)
    return list(seen.values())


def _literal_text(value: Any) -> str:
    return "None" if value is None else repr(value)


def check_domain_type(name: str, domain: Domain, info: ParameterInfo) -> Domain:
    """Check a domain against the notebook parameter's declared type; return it normalised."""
    loc = ["sweep", "space", name]
    if domain.kind in _VALUE_KINDS:
        values = []
        for value in domain.values or []:
            try:
                values.append(coerce_json(info, value))
            except SpecError as exc:
                raise SpecError(f"sweep parameter {name!r}: {exc.message} Change that value in {domain.to_text()}.",
                                errors=[{"loc": loc, "msg": exc.message}]) from None
        return domain.model_copy(update={"values": values})
    numeric = {"int", "float", "any"}
    if info.type not in numeric:
        raise SpecError(f"sweep parameter {name!r} is a {info.type} in the notebook; {domain.kind} draws numbers. "
                        f"List the values instead, for example choice(...).", errors=[{"loc": loc, "msg": f"{info.type} parameter needs choice or grid"}])
    if info.type == "int":
        whole = domain.kind == "randint" or (domain.kind == "quniform" and _all_whole(domain.low, domain.high, domain.q))
        if not whole:
            low, high = math.ceil(domain.low or 0), math.floor(domain.high or 0)
            raise SpecError(f"sweep parameter {name!r} is an int in the notebook but {domain.to_text()} draws fractions; "
                            f"use randint({low}, {high}) or quniform with whole-number bounds and step.",
                            errors=[{"loc": loc, "msg": "int parameter needs randint or whole-number quniform"}])
        return domain.model_copy(update={"low": int(domain.low or 0), "high": int(domain.high or 0),
                                         "q": int(domain.q) if domain.q is not None else None})
    if info.type == "float" and domain.kind == "randint":
        return domain  # integers are valid floats; the runtime passes them as given
    return domain


def check_space(space: dict[str, Domain], signature: NotebookSignature, *, fixed: dict[str, Any] | None = None) -> dict[str, Domain]:
    """Check every swept parameter exists in the notebook with a compatible type."""
    checked: dict[str, Domain] = {}
    clash = sorted(set(space) & set(fixed or {}))
    if clash:
        raise SpecError(f"{', '.join(map(repr, clash))} is both fixed (parameters) and swept (sweep.space); keep it in one place.",
                        errors=[{"loc": ["sweep", "space", n], "msg": "also given as a fixed parameter"} for n in clash])
    for name, domain in space.items():
        info = lookup_parameter(signature, name, loc=("sweep", "space"),
                                unknown=f"sweep parameter {name!r} is not a parameter of {signature.path}")
        checked[name] = check_domain_type(name, domain, info)
    return checked


def parse_space_item(text: str) -> tuple[str, Domain | str]:
    """``"lr=loguniform(1e-4, 0.1)"`` -> ``("lr", Domain)``; ``"seed=42"`` -> ``("seed", "42")`` (a fixed value)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise _bad(f"{text!r} is not NAME=SPACE; for example --param 'n_estimators=randint(50, 400)'.")
    stripped = value.strip()
    head = stripped.split("(", 1)[0].strip()
    if "(" in stripped and stripped.endswith(")") and head.isidentifier():
        try:
            return name, parse_domain_text(stripped)
        except SpecError as exc:
            raise SpecError(f"--param {name}: {exc.message}", errors=[{"loc": ["sweep", "space", name], "msg": exc.message}]) from None
    return name, value
