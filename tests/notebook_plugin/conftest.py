"""Fixtures of the notebook_plugin tests: a real jupyter-server with the extension (pytest-jupyter)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from nbplugin_helpers import write_notebook
from pytest_jupyter.jupyter_server import *  # noqa: F403 - the jp_* fixtures and the async test runner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def notebook_root(jp_root_dir: Path) -> Path:
    """The server's root: the example notebook, a tiny quick one, a slow one, and a hidden one."""
    shutil.copy(EXAMPLES / "train.ipynb", jp_root_dir / "train.ipynb")
    write_notebook(jp_root_dir / "quick.ipynb", "greeting = 'hello'  # what to print\ntimes: int = 1", "print(greeting * times)")
    write_notebook(jp_root_dir / "slow.ipynb", "seconds = 120", "import time\ntime.sleep(seconds)")
    write_notebook(jp_root_dir / ".hidden" / "secret.ipynb", "x = 1", "print(x)")
    return jp_root_dir


@pytest.fixture
def jp_server_config(notebook_root: Path, tmp_path: Path) -> dict[str, Any]:
    """Enable the extension with its run store in a per-test folder."""
    return {
        "ServerApp": {"jpserver_extensions": {"notebook_plugin": True}},
        "NbscaleExtension": {"run_store_path": str(tmp_path / "runs.db")},
    }


ApiCall = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def api(jp_fetch: Any) -> ApiCall:
    """``await api("GET", "runs", params={...}, body=...)`` -> (status, JSON body); never raises on 4xx."""

    async def call(method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False}
        if params is not None:
            kwargs["params"] = params
        if method == "POST":
            kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body if body is not None else {})
        response = await jp_fetch("nbscale", "api", *path.split("/"), **kwargs)
        text = response.body.decode() if response.body else ""
        try:
            return response.code, json.loads(text) if text else None
        except json.JSONDecodeError:
            return response.code, text

    return call
