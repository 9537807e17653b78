"""``python -m hub_extension``: run the quota service (JupyterHub starts it from jupyterhub_config.py)."""

from .app import main

main()
