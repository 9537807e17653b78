"""nbscale GPU quota service for JupyterHub: admission, an append-only ledger, the admin page,
and the client (:mod:`hub_extension.client`) that the Jupyter plugin and the CLI call."""

SERVICE_NAME = "nbscale-quotas"
USE_SCOPE = "custom:nbscale-quotas:use"
ADMIN_SCOPE = "custom:nbscale-quotas:admin"
#: header on every answer of the service, so clients never mistake a proxy or hub answer for it
SERVICE_HEADER = "X-Nbscale-Quota-Service"

__all__ = ["ADMIN_SCOPE", "SERVICE_HEADER", "SERVICE_NAME", "USE_SCOPE"]
