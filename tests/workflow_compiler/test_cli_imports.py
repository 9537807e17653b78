"""The light commands answer at once, and ``compile`` soon after: each imports only what it uses (issue 19).

Each command runs ``main([...])`` in a fresh interpreter, which then reports the modules it loaded.
Importing MLflow, Ray, hera or the kubernetes client would cost a light command seconds; the
run store's pydantic models and nbformat (with jsonschema) cost tenths, so the commands that
need neither must not load them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_compiler.store import Progress, RunRecord, RunStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train.ipynb"

#: Never imported by a light command: seconds each, or the compiler that needs them.
HEAVY = {"mlflow", "ray", "hera", "kubernetes", "papermill", "IPython", "sqlalchemy",
         "workflow_compiler.compiler", "workflow_compiler.executors.argo", "rich.progress"}
MODELS = {"pydantic", "yaml"}  # the run store's and specs' models
NOTEBOOKS = {"nbformat", "jsonschema"}  # ~0.25 s: only to word an invalid notebook's error, or to write one
VALIDATOR = {"fastjsonschema"}  # checks a notebook against nbformat's schema: only commands that read one
RICH = {"rich"}  # ~0.04 s: only to print for people, never for --json or --help
#: The run records' validators (and pydantic's scan of every installed distribution for plugins, ~0.1 s
#: together): built only to validate a new or changed record, not to read or print one.
VALIDATORS = {"built:Progress", "built:StepState", "built:RunRecord"}

_REPORT = """
import json, sys
from workflow_compiler.cli import main
code = main(json.loads(sys.argv[1]))
store = sys.modules.get("workflow_compiler.store")
built = [name for name in ("Progress", "StepState", "RunRecord") if store and getattr(store, name).__pydantic_complete__]
print(json.dumps({"code": code, "modules": sorted(sys.modules), "built": built}))
"""


def loaded_by(argv: list[str], cwd: Path) -> set[str]:
    """The top-level packages and our own modules a fresh interpreter holds after ``main(argv)``, and
    ``built:<model>`` for each run-record model whose pydantic validator it built."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _REPORT, json.dumps(argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    modules: list[str] = report["modules"]
    return ({m for m in modules if "." not in m} | {m for m in modules if m.startswith(("workflow_compiler.", "rich."))}
            | {f"built:{name}" for name in report["built"]})


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a notebook, and a private home holding one finished local run and one running."""
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    store = RunStore()
    store.create(RunRecord(id="nbs-00000000aa", notebook="train.ipynb", status="SUCCEEDED",
                           progress=Progress(done=3, total=3, unit="cells"), metrics={"accuracy": 0.9}))
    store.create(RunRecord(id="nbs-00000000bb", notebook="train.ipynb", status="RUNNING", pid=os.getpid()))
    shutil.copy(EXAMPLE, tmp_path / "train.ipynb")
    for name in ("prepare.ipynb", "pipeline.yaml"):
        shutil.copy(EXAMPLE.parent / name, tmp_path / name)
    (tmp_path / "grid.yaml").write_text("sweep:\n  space:\n    n_estimators: grid(20, 60)\n  metric: val_accuracy\n  mode: max\n  search: grid\n",
                                        encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("argv", "allowed"), [
    (["inspect", "train.ipynb"], {*VALIDATOR, *RICH}),  # a notebook's signature is plain dataclasses
    (["inspect", "train.ipynb", "--json"], VALIDATOR),
    (["runs"], {"pydantic", *RICH}),  # refreshes the running local run through its executor
    (["runs", "--json"], {"pydantic"}),
    (["status", "nbs-00000000aa"], {"pydantic", *RICH}),
    (["status", "nbs-00000000bb"], {"pydantic", *RICH}),
    (["status", "nbs-00000000bb", "--json"], {"pydantic"}),
])
def test_light_commands_import_only_what_they_use(argv: list[str], allowed: set[str], workspace: Path) -> None:
    forbidden = HEAVY | ((MODELS | NOTEBOOKS | VALIDATOR | RICH | VALIDATORS) - allowed)
    assert loaded_by(argv, workspace) & forbidden == set()


def test_help_imports_no_models(workspace: Path) -> None:
    """``nbscale --help`` builds the whole parser, and argparse exits after printing it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = ("import sys\nfrom workflow_compiler.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=workspace, env=env, capture_output=True, text=True, timeout=120)
    assert "usage: nbscale" in done.stdout
    loaded = set(done.stdout.split())
    assert loaded & (HEAVY | MODELS | NOTEBOOKS | VALIDATOR | RICH | {"workflow_compiler.store", "workflow_compiler.spec"}) == set()


#: ``compile`` builds plain dicts and checks them against the vendored CRDs: no hera (~0.5 s of CPU), no
#: executor, store or client of a cluster, MLflow or Ray, and no captured-pod model (it captures no pod),
#: whichever kind of spec it compiles.
COMPILE_NEVER = (HEAVY - {"workflow_compiler.compiler"}) | {"workflow_compiler.executors", "workflow_compiler.store",
                                                           "workflow_compiler.tracking", "workflow_compiler.submit",
                                                           "workflow_compiler.podenv"}


@pytest.mark.parametrize("argv", [
    ["compile", "train.ipynb", "--validate", "-o", "run.yaml"],
    ["compile", "pipeline.yaml", "--validate", "-o", "pipeline-out.yaml"],
    ["compile", "train.ipynb", "--sweep", "grid.yaml", "--validate", "-o", "rayjob.yaml"],
    ["compile", "train.ipynb", "--sweep", "grid.yaml", "--fanout", "--validate", "-o", "fanout.yaml"],
])
def test_compile_imports_no_hera_and_nothing_that_runs(argv: list[str], workspace: Path) -> None:
    loaded = loaded_by(argv, workspace)
    assert "workflow_compiler.compiler" in loaded  # the probe sees the compiler, so it would see hera
    assert loaded & COMPILE_NEVER == set()
    assert (workspace / argv[-1]).read_text(encoding="utf-8").startswith("apiVersion: argoproj.io/v1alpha1")
