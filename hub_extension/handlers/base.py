"""Authentication, authorisation and error mapping shared by every handler of the quota service."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed  # type: ignore[import-untyped]
from pydantic import BaseModel, ValidationError
from tornado.web import HTTPError, RequestHandler

from workflow_compiler.errors import NbscaleError

from .. import ADMIN_SCOPE, SERVICE_HEADER, USE_SCOPE
from ..errors import Forbidden
from ..store import Caller, QuotaStore

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as nbscale's ``{"loc", "msg"}`` list."""
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object (an empty body is ``{}``), or an error that says what is wrong with it."""
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise NbscaleError(f"The body is not valid JSON: {exc.msg} (line {exc.lineno}).") from None
    if not isinstance(body, dict):
        raise NbscaleError("The body must be a JSON object.")
    return body


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` validated as ``model``: errors exactly as ``model.model_validate(json_object(raw))`` gives them."""
    try:
        return model.model_validate_json(raw or b"{}")  # parsed and checked in one pass
    except ValidationError:
        pass
    # the two-step path words every error as the API always has (bad JSON, not an object, fields)
    return model.model_validate(json_object(raw))


class AllowedModels:
    """The hub's answers that passed the service's access check, remembered by identity.

    HubOAuth hands out the same dict from its token cache until the entry expires and it asks the
    hub again; that new answer is a new dict and is checked anew. So remembering the dict itself
    (not its token or contents) checks exactly as often as the hub is asked: no access outlives
    HubOAuth's own cache. A refusal is never remembered.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._allowed: dict[int, dict[str, Any]] = {}  # id -> the dict itself (kept alive: its id stays its own)

    def check(self, model: dict[str, Any], check: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """``model`` if it passed ``check`` before, else ``check(model)`` (remembered when it passes)."""
        if self._allowed.get(id(model)) is model:
            return model
        allowed = check(model)
        if allowed is model:
            if len(self._allowed) >= self.size:
                self._allowed.clear()  # expired answers: HubOAuth no longer hands them out
            self._allowed[id(model)] = model
        return allowed


class QuotaHandler(HubOAuthenticated, RequestHandler):
    """Base handler: identity only from the hub's token check, ``?token=`` refused, XSRF on cookie writes."""

    store: QuotaStore

    def initialize(self, store: QuotaStore, **_: Any) -> None:  # type: ignore[override]
        self.store = store

    def set_default_headers(self) -> None:
        # lets the client tell this service's answers from a proxy's or the hub's (fail closed)
        self.set_header(SERVICE_HEADER, "1")
        self.set_header("X-Content-Type-Options", "nosniff")  # pages and JSON are read as what they say they are

    def on_finish(self) -> None:
        timings = self.settings.get("benchmark_timings")  # only with the benchmark endpoints (handlers/benchmark.py)
        if timings is not None:
            timings.requests.append(self.request.request_time())

    @property
    def hub_auth(self) -> Any:
        return self.settings["hub_auth"]

    async def prepare(self) -> None:
        """Refuse URL tokens, resolve the caller with the hub, and XSRF-check cookie writes."""
        if "token" in self.request.query_arguments:
            raise HTTPError(403, "Tokens in URLs are refused; send them in an 'Authorization: token ...' header.")
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                # ~20 us of scope expansion a request otherwise (jupyterhub's check_hub_user)
                model = self.settings["allowed_models"].check(model, self.check_hub_user)
            except UserNotAllowed:
                raise HTTPError(403, "Your token lacks access to the nbscale-quotas service.") from None
        self._hub_auth_user_cache = model
        writing = self.request.method not in ("GET", "HEAD", "OPTIONS")
        if writing and model and not getattr(self, "_token_authenticated", False):
            self.check_xsrf_cookie()

    @property
    def model(self) -> dict[str, Any]:
        """The hub's model of the caller (user or service); 403 when there is none."""
        model = self.current_user
        if not model:
            raise HTTPError(403, "Authenticate with a JupyterHub token: 'Authorization: token ...'.")
        return model

    def has_scope(self, scope: str) -> bool:
        """Whether the caller's token holds ``scope`` (as the hub expanded it)."""
        return scope in set(self.model.get("scopes", ()))

    def require_admin(self) -> dict[str, Any]:
        """The caller, if they hold the quota admin scope; 403 otherwise."""
        if not self.has_scope(ADMIN_SCOPE):
            raise Forbidden(f"This needs the '{ADMIN_SCOPE}' scope; ask a hub admin for the quota admin role.")
        return self.model

    def require_user(self) -> Caller:
        """The calling *user* with the use scope. A service token is not a user and cannot hold leases."""
        model = self.model
        if model.get("kind", "user") != "user":
            raise Forbidden("Only users can hold GPU leases; a service token cannot act for a user.")
        if not (self.has_scope(USE_SCOPE) or self.has_scope(ADMIN_SCOPE)):
            raise Forbidden(f"This needs the '{USE_SCOPE}' scope; ask a hub admin for GPU access.")
        return Caller(name=model["name"], kind="user", groups=tuple(sorted(model.get("groups") or ())))

    @property
    def actor(self) -> str:
        """Name written to the ledger for admin actions (services are prefixed)."""
        model = self.model
        return model["name"] if model.get("kind", "user") == "user" else f"service:{model['name']}"


class APIHandler(QuotaHandler):
    """JSON handlers: nbscale errors → their status, pydantic errors → 400 with field messages."""

    def check_xsrf_cookie(self) -> None:
        return self.hub_auth.check_xsrf_cookie(self)

    def get_login_url(self) -> str:
        raise HTTPError(403)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object (400 with a clear message otherwise)."""
        return json_object(self.request.body)

    def body_as(self, model: type[M]) -> M:
        """The request body validated as ``model`` (400 with the JSON error or field messages otherwise)."""
        return parse_body(model, self.request.body)

    def number_argument(self, name: str, default: Any, kind: type) -> Any:
        """A numeric query argument, with a 400 naming it when it is not a number."""
        raw = self.get_argument(name, "")
        if raw == "":
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise NbscaleError(f"Query argument '{name}' must be a number, got '{raw[:40]}'.") from None
        if not value > 0:  # also refuses NaN
            raise NbscaleError(f"Query argument '{name}' must be positive.")
        return value

    def write_json(self, body: Any, status: int = 200) -> None:
        """Send ``body`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (NbscaleError, ValidationError)):
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ValidationError):
            status_code, body = 400, {"message": "Invalid request.", "errors": validation_errors(exc)}
        elif isinstance(exc, NbscaleError):
            status_code, body = exc.http_status, exc.to_dict()
        elif isinstance(exc, HTTPError) and exc.log_message:
            body = {"message": exc.log_message % exc.args if exc.args else exc.log_message, "errors": []}
        else:
            body = {"message": self._reason, "errors": []}
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))
