"""Installing the Python package installs the built lab extension and switches the server extension on."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "notebook_plugin" / "labextension_build"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    assert (BUILD / "package.json").is_file(), "build the lab extension first: scripts/bootstrap.sh does it"
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(out)],
                   check=True, capture_output=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("nbscale-*.whl")))


def test_wheel_enables_the_server_extension(wheel: zipfile.ZipFile) -> None:
    name = next(n for n in wheel.namelist() if n.endswith("etc/jupyter/jupyter_server_config.d/nbscale.json"))
    assert json.loads(wheel.read(name)) == {"ServerApp": {"jpserver_extensions": {"notebook_plugin": True}}}


def test_wheel_carries_the_prebuilt_lab_extension(wheel: zipfile.ZipFile) -> None:
    prefix = next(n for n in wheel.namelist() if n.endswith("share/jupyter/labextensions/nbscale/package.json")).rsplit("/", 1)[0]
    names = wheel.namelist()
    assert any(n.startswith(f"{prefix}/static/remoteEntry.") for n in names)
    meta = json.loads(wheel.read(f"{prefix}/package.json"))
    assert meta["name"] == "nbscale" and meta["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    schema = json.loads(wheel.read(f"{prefix}/schemas/nbscale/plugin.json"))
    toolbar = schema["jupyter.lab.toolbars"]["Notebook"]
    assert {"name": "nbscale-run", "command": "nbscale:run-notebook", "label": "Run at scale", "rank": 80} in toolbar


def test_build_is_not_older_than_its_sources() -> None:
    sources = [p for d in ("src", "style", "schema") for p in (ROOT / "notebook_plugin" / "labextension" / d).rglob("*") if p.is_file()]
    newest = max(p.stat().st_mtime for p in sources)
    assert (BUILD / "package.json").stat().st_mtime >= newest - 1, "stale lab extension build: rerun scripts/bootstrap.sh"
