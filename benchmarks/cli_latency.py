"""Benchmark: how long the ``nbscale`` command takes to answer, each command as a whole process.

Issue 19's targets: ``nbscale --help``, ``inspect``, ``runs`` and ``status`` in at most 0.3 s each,
``compile --validate`` of a 500-cell notebook in at most 0.6 s. Beside them, ``python -c pass``
is the floor: what any Python command costs here before it imports anything. ``store_rich_floor``
imports only the run store (pydantic and the run records' models) and rich's console: what
``runs`` and ``status`` cannot go below while they read records through those models and print
through rich. ``runs_json`` and ``status_running_json`` print JSON (no rich); the latter asks the
local executor about the running run.

Each command runs ``--repeats`` times, the commands alternating, after one untimed round that warms
the OS caches and the CRD cache under the benchmark's ``NBSCALE_HOME``; the median wall time and
the median CPU time (user + system of the child) are reported. ``compile_validate_new_home`` is
the same compile with a new, empty ``NBSCALE_HOME`` each time: a user's first compile.
``magic_status`` is the first ``%nbscale status`` in a warm IPython (the extension loaded), timed
by that process around the line magic alone.

Every process writes and reads its bytecode under a private ``PYTHONPYCACHEPREFIX`` (and
``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed package has its ``.pyc`` files: without it,
a source tree that may not write ``__pycache__`` compiles every nbscale module on every command.

With ``--baseline DIR`` each command also runs from the source tree in DIR (e.g. the commit before
a change, from ``git archive``), in the same rounds, so both sides share the machine's load.

    python -m benchmarks.cli_latency [--repeats 7] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from .run_overhead import BIN, EXAMPLE, RESULTS, machine

#: Seconds each command may take, from issue 19 (the floor has none).
TARGETS = {"help": 0.3, "inspect": 0.3, "runs": 0.3, "runs_json": 0.3, "status": 0.3, "status_running_json": 0.3,
           "compile_validate": 0.6, "magic_status": 0.3}


def big_notebook(path: Path, cells: int = 500) -> Path:
    """A parameters cell and ``cells - 1`` more, code and markdown: a long notebook to compile."""
    params = new_code_cell("lr = 0.1  # learning rate\nepochs = 3  # passes over the data")
    params.metadata["tags"] = ["parameters"]
    body = [new_markdown_cell(f"## part {i}") if i % 3 == 0 else new_code_cell(f"x{i} = {i} * lr\nprint(x{i})")
            for i in range(cells - 1)]
    nb = new_notebook(cells=[params, *body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


#: The seeded running run: its worker is the benchmark's own process, alive while it times the commands.
RUNNING_ID = "nbs-00000000ff"


def seed_runs(home: Path, count: int = 20) -> str:
    """``count`` finished local runs and one running (this process stands in for its worker); returns a finished one's id."""
    os.environ["NBSCALE_HOME"] = str(home)  # the store and its home checks read it
    from workflow_compiler.store import Progress, RunRecord, RunStore

    store = RunStore()
    for i in range(count):
        store.create(RunRecord(id=f"nbs-{i:010x}", notebook="train.ipynb", status="SUCCEEDED", metrics={"accuracy": 0.9},
                               progress=Progress(done=5, total=5, unit="cells"), started="2026-12-01T00:00:00+00:00"))
    store.create(RunRecord(id=RUNNING_ID, notebook="train.ipynb", status="RUNNING", pid=os.getpid(),
                           progress=Progress(done=2, total=5, unit="cells")))
    return "nbs-0000000000"


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of ``argv``, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


#: Prints the wall and CPU seconds of the first ``%nbscale status`` after ``%load_ext notebook_plugin``.
_MAGIC = """
import contextlib, io, time
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "notebook_plugin")
started, cpu = time.perf_counter(), time.process_time()
with contextlib.redirect_stdout(io.StringIO()):
    shell.run_line_magic("nbscale", "status")
print(time.perf_counter() - started, time.process_time() - cpu)
"""


def self_timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """The wall and CPU seconds that ``argv`` measured itself and printed last (``_MAGIC``)."""
    done = subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    wall, used = done.stdout.split()[-2:]
    return float(wall), float(used)


def commands(run_id: str) -> dict[str, list[str]]:
    """Each measured command line, by name; the console script is the one users run."""
    nbscale = str(BIN / "nbscale")
    return {
        "python_floor": [sys.executable, "-c", "pass"],
        "store_rich_floor": [sys.executable, "-c", "import rich.console, workflow_compiler.store"],
        "help": [nbscale, "--help"],
        "inspect": [nbscale, "inspect", "train.ipynb"],
        "runs": [nbscale, "runs"],
        "runs_json": [nbscale, "runs", "--json"],
        "status": [nbscale, "status", run_id],
        "status_running_json": [nbscale, "status", RUNNING_ID, "--json"],
        "compile_validate": [nbscale, "compile", "big.ipynb", "--validate", "-o", "out.yaml"],
        "compile_validate_new_home": [nbscale, "compile", "big.ipynb", "--validate", "-o", "out.yaml"],
        "magic_status": [sys.executable, "-c", _MAGIC],  # times itself: see self_timed
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Time every command, write benchmarks/results/cli_latency.json and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="also time the commands from this source tree (rows named *_baseline)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big_notebook(work / "big.ipynb")
        (work / "train.ipynb").write_bytes(EXAMPLE.read_bytes())
        run_id = seed_runs(work / "home")
        env = {**os.environ, "NBSCALE_HOME": str(work / "home"), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
        for name in ("MLFLOW_TRACKING_URI", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        lines = commands(run_id)
        sides = {"": env}
        if args.baseline:
            sides["_baseline"] = {**env, "PYTHONPATH": str(args.baseline.resolve())}
        runs = {name + side: (argv_, side_env) for side, side_env in sides.items() for name, argv_ in lines.items()
                if not (side and name.endswith("_floor"))}
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.repeats + 1):  # round 0 warms the OS caches and the CRD cache, untimed
            for name, (argv_, side_env) in runs.items():
                new_home = {"NBSCALE_HOME": str(work / f"new-home-{round_}{name}")} if "new_home" in name else {}
                wall, used = (self_timed if name.startswith("magic") else timed)(argv_, work, {**side_env, **new_home})
                if round_:
                    times[name].append(wall)
                    cpu[name].append(used)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "cli_latency",
        "machine": machine(),
        "baseline": str(args.baseline) if args.baseline else None,
        "repeats": args.repeats,
        "seconds": times,
        "cpu_seconds": cpu,
        "median_seconds": medians,
        "median_cpu_seconds": {name: statistics.median(values) for name, values in cpu.items()},
        "targets_seconds": TARGETS,
        "load_average_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_latency.json").write_text(json.dumps(result, indent=2))
    for name, median in medians.items():
        target = None if name.endswith("_baseline") else TARGETS.get(name.removesuffix("_new_home"))
        verdict = "" if target is None else f"  target <= {target} s: {'met' if median <= target else 'missed'}"
        print(f"{name:35} wall {median:.3f} s  cpu {result['median_cpu_seconds'][name]:.3f} s{verdict}")  # type: ignore[index]
    print(f"[{result['machine']}; load average {result['load_average_1min']:.1f}]")
    return result


if __name__ == "__main__":
    main()
