"""Installing the Python package installs the built lab extension and switches the server extension on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "notebook_plugin" / "labextension_build"


#: What a copy of the project needs to build; the rest (node_modules, caches, the venv) stays behind.
_SOURCES = ("setup.py", "pyproject.toml", "README.md", "workflow_compiler", "notebook_plugin", "hub_extension")
_NOT_SOURCES = shutil.ignore_patterns("node_modules", "__pycache__", "*.egg-info", "build", "lib", "tsconfig.tsbuildinfo")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's sources with the built lab extension, as a user's checkout after `npm run build`."""
    assert (BUILD / "package.json").is_file(), "build the lab extension first: scripts/bootstrap.sh does it"
    copy = tmp_path_factory.mktemp("checkout") / "nbscale"
    for name in _SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=_NOT_SOURCES)
        elif source.is_file():
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy / name)
    return copy


@pytest.fixture(scope="module")
def wheel_build(project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[zipfile.ZipFile, str]:
    """The wheel, and what the build printed."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", str(project),
                            "-w", str(out)], check=True, capture_output=True, text=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("nbscale-*.whl"))), build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel(wheel_build: tuple[zipfile.ZipFile, str]) -> zipfile.ZipFile:
    return wheel_build[0]


def test_the_build_names_every_folder_it_installs(wheel_build: tuple[zipfile.ZipFile, str]) -> None:
    """No setuptools warning per data folder (they made `make demo` print ~450 lines)."""
    wheel, log = wheel_build
    assert "is absent from the `packages` configuration" not in log
    names = wheel.namelist()
    for data in ("workflow_compiler/schemas/argo-workflows/argoproj.io_workflows.yaml", "workflow_compiler/schemas/PROVENANCE.md",
                 "hub_extension/templates/quota.html", "hub_extension/migrations/script.py.mako", "hub_extension/alembic.ini",
                 "workflow_compiler/sweep/raysite/sitecustomize.py", "notebook_plugin/py.typed"):
        assert data in names, data
    assert not [n for n in names if "node_modules" in n or n.startswith("notebook_plugin/labextension")]


def test_an_editable_install_enables_the_server_and_lab_extensions(project: Path, tmp_path: Path) -> None:
    """`pip install -e .` alone, in a fresh environment, gives Jupyter the REST API and the lab extension."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # the dependencies (and pip) from this test's environment, without its own nbscale install: its .pth files stay unread
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(project)],
                   check=True, capture_output=True, timeout=300, env=env, cwd=tmp_path)
    listed = subprocess.run([python, "-m", "jupyter_server", "extension", "list"], capture_output=True, text=True, timeout=120,
                            env=env, cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stderr + listed.stdout)  # its colours
    config_dir = f"Config dir: {env_dir / 'etc' / 'jupyter'}"
    assert config_dir in text, text
    section = " ".join(text.split(config_dir, 1)[1].split("Config dir:", 1)[0].split())
    assert "notebook_plugin enabled" in section and "notebook_plugin OK" in section, section
    located = subprocess.run([python, "-c", "import notebook_plugin; print(notebook_plugin.__file__)"], check=True,
                             capture_output=True, text=True, env=env, cwd=tmp_path).stdout.strip()
    assert located == str(project / "notebook_plugin" / "__init__.py")  # editable: the checkout's code runs
    lab = env_dir / "share" / "jupyter" / "labextensions" / "nbscale"
    assert json.loads((lab / "package.json").read_text())["name"] == "nbscale"


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


@pytest.mark.parametrize(("home", "prefix"), [(None, ""), ("/tmp/elsewhere", "NBSCALE_HOME=/tmp/elsewhere ")])
def test_make_demo_names_the_home_in_the_commands_it_suggests(home: str | None, prefix: str) -> None:
    """`NBSCALE_HOME=/tmp/h make demo` then `nbscale runs` as printed would list another home's runs."""
    env = {k: v for k, v in os.environ.items() if k != "NBSCALE_HOME"} | ({"NBSCALE_HOME": home} if home else {})
    plan = subprocess.run(["make", "-n", "demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout
    assert f'echo "Runs:           {prefix}.venv/bin/nbscale runs"' in plan
    assert f'echo "MLflow UI:      {prefix}make mlflow-ui' in plan
