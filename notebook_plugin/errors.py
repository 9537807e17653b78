"""The one mapping from exceptions to HTTP answers, used by every REST handler."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from tornado.web import HTTPError

from workflow_compiler.errors import NbscaleError

log = logging.getLogger(__name__)


def error_response(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body (``{"message", "errors"}``) to answer ``exc`` with."""
    if isinstance(exc, NbscaleError):
        return exc.http_status, exc.to_dict()
    if isinstance(exc, ValidationError):  # a model validated outside parse_model: still the caller's fault
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        return 400, {"message": "invalid request: " + "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors),
                     "errors": errors, "type": "ValidationError"}
    if isinstance(exc, json.JSONDecodeError):
        return 400, {"message": f"the request body is not JSON: {exc.msg} at position {exc.pos}.", "errors": [],
                     "type": "BadRequest"}
    if isinstance(exc, HTTPError):
        return exc.status_code, {"message": exc.log_message or exc.reason or "", "errors": [], "type": "HTTPError"}
    log.error("nbscale: unexpected error", exc_info=exc)
    return 500, {"message": f"internal error ({type(exc).__name__}); the Jupyter server log has the details.",
                 "errors": [], "type": "InternalError"}
