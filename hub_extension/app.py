"""The hub-managed service process: ``python -m hub_extension`` (launched by JupyterHub)."""

from __future__ import annotations

import gc
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler  # type: ignore[import-untyped]
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.web import Application as WebApplication
from traitlets import Float, Unicode
from traitlets.config import Application

from . import SERVICE_NAME
from .db import make_engine, upgrade_database
from .handlers.api import api_routes
from .handlers.base import AllowedModels
from .handlers.benchmark import ServiceTimings, benchmark_endpoints_enabled
from .handlers.health import health_routes
from .handlers.pages import PolicyFormHandler, QuotaPageHandler
from .store import QuotaStore

TEMPLATES = Path(__file__).parent / "templates"
#: SameSite of the service's session, OAuth state and ``_xsrf`` cookies (an admin's JUPYTERHUB_COOKIE_OPTIONS may override).
COOKIE_SAMESITE = "Lax"


def make_web_app(store: QuotaStore, *, service_prefix: str, hub_prefix: str, hub_auth: HubOAuth,
                 cookie_secret: bytes, benchmark_timings: ServiceTimings | None = None) -> WebApplication:
    """The tornado application: REST API, admin page and OAuth callback under ``service_prefix``
    (``benchmark_timings`` collects request times for ``benchmark/timings``, with the benchmark endpoints)."""
    jinja_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True))
    routes: list[Any] = [
        (service_prefix, QuotaPageHandler, {}),
        (service_prefix + "policies", PolicyFormHandler, {}),
        *api_routes(service_prefix),
        *health_routes(service_prefix),
    ]
    routes = [(url, handler, {**kwargs, "store": store}) for url, handler, kwargs in routes]
    routes.append((service_prefix + "oauth_callback", HubOAuthCallbackHandler))
    # Lax: the hub's OAuth redirect back (a top-level GET) still carries them; other sites' forms do not.
    hub_auth.cookie_options = {"samesite": COOKIE_SAMESITE, **hub_auth.cookie_options}
    return WebApplication(
        routes, hub_auth=hub_auth, allowed_models=AllowedModels(), cookie_secret=cookie_secret, jinja_env=jinja_env, service_prefix=service_prefix,
        hub_prefix=hub_prefix, xsrf_cookie_kwargs={"path": service_prefix, "samesite": COOKIE_SAMESITE},
        benchmark_timings=benchmark_timings,
    )


#: how long a thread may keep the GIL while another waits for it (Python's default: 5 ms); see README "The HTTP side"
GIL_SWITCH_INTERVAL_S = 0.001


def prepare_interpreter_for_serving() -> None:
    """Once started: leave what start-up allocated (the hub's, SQLAlchemy's and pydantic's modules and
    objects) out of every later garbage collection, whose full runs walked it all and held the event
    loop for 0.1-0.3 s under load; and let the loop and the group commit's thread take turns with the
    GIL every millisecond, as the group commit's thread waits for it after each SQLite call (issue 19)."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


class QuotaServiceApp(Application):
    """GPU quota service for JupyterHub: atomic admission, leases, policies, ledger and admin page."""

    name = SERVICE_NAME
    description = "nbscale GPU quota service (run by JupyterHub as a managed service)"

    db_url = Unicode(
        os.environ.get("NBSCALE_QUOTA_DB_URL", "sqlite:///nbscale_quotas.sqlite"),
        help="""SQLAlchemy URL of the quota database (migrated to the latest schema at start).
        SQLite for one hub, Postgres for production, for example
        c.QuotaServiceApp.db_url = "postgresql+psycopg://quotas:secret@db/quotas"
        Default: $NBSCALE_QUOTA_DB_URL, else sqlite:///nbscale_quotas.sqlite in the working directory.""",
    ).tag(config=True)
    default_ttl_seconds = Float(
        120.0,
        help="""Lease lifetime between heartbeats when a request does not ask for one; a run that
        stops heartbeating loses its GPUs after this long. c.QuotaServiceApp.default_ttl_seconds = 120""",
    ).tag(config=True)
    max_ttl_seconds = Float(
        3600.0, help="Longest lease lifetime a client may ask for. c.QuotaServiceApp.max_ttl_seconds = 3600"
    ).tag(config=True)
    reclaim_interval_seconds = Float(
        15.0,
        help="How often expired leases are reclaimed in the background (admission also reclaims "
        "the caller's). c.QuotaServiceApp.reclaim_interval_seconds = 15",
    ).tag(config=True)
    config_file = Unicode("", help="Python config file to load, e.g. nbscale_quotas_config.py").tag(config=True)

    aliases = {
        "db-url": "QuotaServiceApp.db_url",
        "default-ttl": "QuotaServiceApp.default_ttl_seconds",
        "max-ttl": "QuotaServiceApp.max_ttl_seconds",
        "reclaim-interval": "QuotaServiceApp.reclaim_interval_seconds",
        "config": "QuotaServiceApp.config_file",
        "log-level": "Application.log_level",
    }

    def initialize(self, argv: list[str] | None = None) -> None:
        """Parse the command line and the optional config file."""
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)

    def start(self) -> None:
        """Migrate the database, listen on ``$JUPYTERHUB_SERVICE_URL`` and serve until SIGTERM."""
        engine = make_engine(self.db_url)
        upgrade_database(engine)
        store = QuotaStore(engine, default_ttl_seconds=self.default_ttl_seconds, max_ttl_seconds=self.max_ttl_seconds)
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/"
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        secret = os.environ.get("NBSCALE_QUOTA_COOKIE_SECRET")
        # the singleton: HubOAuthCallbackHandler looks up the same instance (PKCE verifier, OAuth state)
        hub_auth = HubOAuth.instance(cache_max_age=60, parent=self)
        loop = IOLoop.current()
        timings = ServiceTimings() if benchmark_endpoints_enabled() else None
        if timings is not None:
            timings.install(loop.asyncio_loop)  # type: ignore[attr-defined]
        web = make_web_app(store, service_prefix=prefix, hub_prefix=hub_prefix, hub_auth=hub_auth,
                           cookie_secret=bytes.fromhex(secret) if secret else secrets.token_bytes(32),
                           benchmark_timings=timings)
        web.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        reclaim = PeriodicCallback(store.reclaim_in_background, self.reclaim_interval_seconds * 1000)
        reclaim.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # without these the hub waits ~27 s for the service at shutdown (MACHINE-NOTES)
            loop.asyncio_loop.add_signal_handler(sig, loop.stop)  # type: ignore[attr-defined]
        self.log.info("nbscale quota service on %s%s (database %s)", url.geturl(), prefix,
                      engine.url.render_as_string(hide_password=True))
        prepare_interpreter_for_serving()
        loop.start()
        reclaim.stop()
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m hub_extension``."""
    app = QuotaServiceApp.instance()
    app.initialize(argv)
    app.start()
