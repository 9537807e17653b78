"""nbscale inside Jupyter: the server extension (REST under ``/nbscale/api/``), the lab extension's
data files, and the ``%nbscale`` IPython magics. This module holds only the entry points."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Tell jupyter-server which ExtensionApp this package provides."""
    from .extension import NbscaleExtension

    return [{"module": "notebook_plugin", "app": NbscaleExtension}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt lab extension is installed (setup.py's data_files put it there)."""
    return [{"src": "labextension_build", "dest": "nbscale"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext notebook_plugin``: register the ``%nbscale`` / ``%%nbscale`` magics."""
    from .magics import NbscaleMagics

    ipython.register_magics(NbscaleMagics)
