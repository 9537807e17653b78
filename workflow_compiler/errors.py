"""The exceptions nbscale raises. Each message says what went wrong and what to do next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NbscaleError(Exception):
    """Base class of every error nbscale raises on purpose.

    ``errors`` holds field-level details as ``{"loc": [...], "msg": str}`` dicts, so the CLI, the
    REST API and the front end can show each message next to the input it concerns.
    """

    #: HTTP status the REST API answers with; the CLI exits non-zero for every NbscaleError.
    http_status: int = 400

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the REST API sends for this error."""
        return {"message": self.message, "errors": self.errors, "type": type(self).__name__}


class NotebookError(NbscaleError):
    """The notebook file is missing, unreadable, not a notebook, or outside the allowed root."""

    def __init__(self, message: str, *, path: str = "", http_status: int = 400, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.path = path
        self.http_status = http_status


class SpecError(NbscaleError):
    """A run, pipeline or sweep spec is invalid: unknown parameter, wrong type, bad bounds, cycle."""


class RequestTooLarge(SpecError):
    """A request or spec is over a documented size limit (``workflow_compiler/limits.py``)."""

    http_status = 413


class CompileError(NbscaleError):
    """The spec is valid but cannot be turned into a manifest (for example an unknown GPU pool)."""


class ManifestInvalid(NbscaleError):
    """A manifest does not validate against the upstream CRD schema."""

    http_status = 500


class ExecutionError(NbscaleError):
    """A run could not be started, or failed in a way the caller must hear about."""

    http_status = 500


class RunNotFound(NbscaleError):
    """No run with that id in the store."""

    http_status = 404


class QuotaExceeded(NbscaleError):
    """The quota service refused a submission. ``reason`` names the limit, usage and what to do."""

    http_status = 409

    def __init__(self, message: str, *, limit: str = "", usage: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit
        self.usage = usage


class QuotaUnavailable(NbscaleError):
    """The quota service could not be reached; submissions are refused (fail closed)."""

    http_status = 503


def field_errors(exc: Any, *, patterns: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """A pydantic ``ValidationError`` as ``[{"loc", "msg"}]`` plus one readable line listing them.

    Messages are in plain words: a missing field is "required", and a text that misses a regular
    expression says what ``patterns`` (regex -> words) calls that form, never the regex itself.
    """
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": _plain_message(e, patterns or {})} for e in exc.errors()]
    return errors, "; ".join(f"{'.'.join(e['loc']) or '(top)'}: {e['msg']}" for e in errors)


def _plain_message(error: Mapping[str, Any], patterns: Mapping[str, str]) -> str:
    if error["type"] == "missing":
        return "required"
    if error["type"] == "string_pattern_mismatch":
        words = patterns.get(str((error.get("ctx") or {}).get("pattern")))
        return f"must be {words}" if words else "does not have the form this field takes (see its description)"
    if error["type"] in ("too_short", "too_long"):
        ctx = error.get("ctx") or {}
        bound = ctx.get("min_length") if error["type"] == "too_short" else ctx.get("max_length")
        return f"must have at {'least' if error['type'] == 'too_short' else 'most'} {bound} item{'' if bound == 1 else 's'}"
    return str(error["msg"])


class TrackingUnreachable(NbscaleError):
    """No MLflow tracking server answers at the tracking URI; ``host`` names it (never its password)."""

    http_status = 503

    def __init__(self, message: str, *, host: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.host = host


class UnsafeFolder(NbscaleError):
    """NBSCALE_HOME, or a folder in it, is not private: another user owns it or can write to it."""

    http_status = 500

    def __init__(self, message: str, *, path: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.path = path
