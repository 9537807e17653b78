"""Helpers shared by the notebook_plugin tests (kept out of the production package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from jupyter_server.auth.authorizer import Authorizer


class DenyAllAuthorizer(Authorizer):
    """Refuses every action on every resource, to prove each handler asks the authorizer."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return False


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    """A small notebook: a cell tagged ``parameters`` and one code cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
