# JupyterHub configuration that registers the nbscale GPU quota service.
# Copy the block below into your jupyterhub_config.py; adjust the four settings at the top.
import sys

c = get_config()  # type: ignore[name-defined]  # noqa: F821  (provided by JupyterHub)

# --- settings ----------------------------------------------------------------------------
PYTHON = globals().get("PYTHON", sys.executable)  # the Python that has nbscale installed
QUOTA_PORT = globals().get("QUOTA_PORT", 10101)  # where the service listens (127.0.0.1 only)
QUOTA_DB_URL = globals().get("QUOTA_DB_URL", "sqlite:////srv/jupyterhub/nbscale_quotas.sqlite")
QUOTA_ARGS = globals().get("QUOTA_ARGS", [])  # e.g. ["--default-ttl=120"]

# --- the service, its scopes and roles ---------------------------------------------------
c.JupyterHub.custom_scopes = {
    "custom:nbscale-quotas:use": {"description": "Ask for GPU admission and see your own GPU quota."},
    "custom:nbscale-quotas:admin": {"description": "Set GPU quotas and see everyone's usage and the ledger."},
}
c.JupyterHub.services = [
    {
        "name": "nbscale-quotas",
        "display": True,  # listed in the hub's Services menu
        "url": f"http://127.0.0.1:{QUOTA_PORT}",
        "command": [PYTHON, "-m", "hub_extension", f"--db-url={QUOTA_DB_URL}", *QUOTA_ARGS],
        # the browser session (OAuth cookie) may carry these scopes, if the user holds them
        "oauth_client_allowed_scopes": ["custom:nbscale-quotas:use", "custom:nbscale-quotas:admin"],
        "oauth_no_confirm": True,
    },
]
c.JupyterHub.load_roles = [
    {
        "name": "nbscale-quota-user",
        "description": "Run notebooks on GPUs within their quota",
        "scopes": ["access:services!service=nbscale-quotas", "custom:nbscale-quotas:use"],
        "groups": ["gpu-users"],
    },
    {
        "name": "nbscale-quota-admin",
        "description": "Administer GPU quotas",
        "scopes": [
            "access:services!service=nbscale-quotas",
            "custom:nbscale-quotas:use",
            "custom:nbscale-quotas:admin",
        ],
        "users": ["quota-admin"],
    },
    {
        "name": "nbscale-quotas-service",
        "description": "Lets the quota service look up a user's groups for the admin view",
        "scopes": ["read:users:groups"],
        "services": ["nbscale-quotas"],
    },
]

# --- single-user servers: the token the nbscale extension uses, and where the service is -----
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=nbscale-quotas",
    "custom:nbscale-quotas:use",
]
c.Spawner.environment = {"NBSCALE_QUOTA_URL": f"http://127.0.0.1:{QUOTA_PORT}/services/nbscale-quotas/"}
