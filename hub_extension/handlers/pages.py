"""The server-rendered page: admins see policies, usage and the ledger; users see their own quota."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from tornado.web import HTTPError, authenticated

from workflow_compiler.errors import NbscaleError

from .. import ADMIN_SCOPE, admin
from ..schemas import PolicyBody
from ..store import QuotaStore
from .base import QuotaHandler, validation_errors
from .thread_results import in_database_thread


class PageHandler(QuotaHandler):
    """HTML handlers: Jinja2 with autoescape, no inline script, a strict CSP as a second line of defence."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'self'; form-action 'self'",
        )

    def render_page(self, name: str, **context: Any) -> None:
        """Render template ``name`` with the common context (prefixes, user, xsrf token)."""
        template = self.settings["jinja_env"].get_template(name)
        self.finish(template.render(
            service_prefix=self.settings["service_prefix"], hub_prefix=self.settings["hub_prefix"],
            user=self.current_user, xsrf_token=self.xsrf_token.decode("ascii"), **context,
        ))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, HTTPError) and exc.log_message:
            message = exc.log_message
        template = self.settings["jinja_env"].get_template("error.html")
        self.finish(template.render(service_prefix=self.settings["service_prefix"],
                                    hub_prefix=self.settings["hub_prefix"], user=None,
                                    status_code=status_code, message=message))


class QuotaPageHandler(PageHandler):
    """GET ``/``: the admin page for quota admins, the caller's own quota for everyone else."""

    @authenticated
    async def get(self) -> None:
        model = self.model
        is_admin = ADMIN_SCOPE in set(model.get("scopes", ()))
        context: dict[str, Any] = {"is_admin": is_admin, "form_error": self.get_argument("error", "")[:300]}
        user = model["name"] if model.get("kind", "user") == "user" else None
        groups = tuple(sorted(model.get("groups") or ()))
        context.update(await in_database_thread(_page_reads, self.store, user, groups, is_admin))
        self.render_page("quota.html", **context)


def _page_reads(store: QuotaStore, user: str | None, groups: tuple[str, ...], is_admin: bool) -> dict[str, Any]:
    """What the page shows from the database: the caller's quota (users), policies, usage and ledger (admins)."""
    context: dict[str, Any] = {}
    if user is not None:
        context["quota"] = store.quota_for(user, groups)
    if is_admin:
        context.update(
            policies=admin.list_policies(store),
            usage=admin.usage_overview(store),
            ledger=admin.ledger_page(store, limit=50),
        )
    return context


class PolicyFormHandler(PageHandler):
    """POST ``policies``: the admin page's form (cookie auth, so XSRF-checked in ``prepare``)."""

    @authenticated
    async def post(self) -> None:
        if ADMIN_SCOPE not in set(self.model.get("scopes", ())):
            raise HTTPError(403, f"Changing quotas needs the '{ADMIN_SCOPE}' scope.")
        kind, name = self.get_body_argument("kind", ""), self.get_body_argument("name", "").strip()
        try:
            if self.get_body_argument("action", "save") == "delete":
                await in_database_thread(admin.delete_policy, self.store, self.actor, kind, name)
            else:
                fields = self._fields()
                await in_database_thread(admin.set_policy, self.store, self.actor, kind, name, fields)
        except ValidationError as exc:
            return self._back("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in validation_errors(exc)))
        except NbscaleError as exc:
            return self._back(exc.message)
        self.redirect(self.settings["service_prefix"] + "#policies")

    def _fields(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        for field in ("max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours"):
            value = self.get_body_argument(field, "").strip()
            if value:
                raw[field] = value
        pools = self.get_body_argument("allowed_pools", "").strip()
        if pools:
            raw["allowed_pools"] = [p.strip() for p in pools.split(",") if p.strip()]
        return PolicyBody.model_validate(raw).model_dump()

    def _back(self, message: str) -> None:
        from urllib.parse import urlencode

        self.redirect(self.settings["service_prefix"] + "?" + urlencode({"error": message[:300]}) + "#policies")
