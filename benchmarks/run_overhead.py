"""Benchmark: `nbscale run` against the plain `papermill` CLI on the same small notebook.

Both run side by side in one session, alternating, and we report the median of each and their
ratio, on a trivial notebook and on examples/train.ipynb (scikit-learn, metrics logged to MLflow).
`nbscale run` does more (compiles and validates the workflow, logs params, metrics, the output
notebook and its HTML to MLflow); issue 19's targets are 1.1x warm and 1.3x cold.

`nbscale run` is measured as a user meets it:
- "nbscale": after the first run, the local executor's warm tracking agent
  (workflow_compiler/tracking/agent.py) has MLflow imported;
- "nbscale_first": the agent is stopped before each run, as for the first run of a session;
- "nbscale_cold": NBSCALE_TRACKING_AGENT=0, as in a pod on a cluster: each step imports MLflow in
  its own helper.

Each figure is the median wall time of the whole process; ``cpu_seconds`` is the median user +
system time of it and its children that it waited for (the agent is not one). ``--phases`` adds,
for each nbscale mode, the median time from the command's start to each mark of its run's log
(step started, kernel ready, last cell, outputs logged, worker done). With ``--baseline DIR`` each
nbscale mode also runs from the source tree in DIR (e.g. ``git archive`` of the commit before a
change), in the same rounds, each side with its own ``NBSCALE_HOME``.

    python -m benchmarks.run_overhead [--repeats 5] [--small-only] [--phases] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

RESULTS = Path(__file__).parent / "results"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train.ipynb"
BIN = Path(sys.executable).parent
#: Marks of a local run's log.txt, in order: (phase, a pattern of its line). The last match of each counts.
PHASES = [
    ("step started", re.compile(r"nbscale-step INFO ")),
    ("papermill started", re.compile(r"nbscale-step INFO Input Notebook")),
    ("kernel ready", re.compile(r"nbscale-step INFO Executing notebook")),
    ("last cell done", re.compile(r"nbscale-step INFO cell (\d+)/\1 done")),
    ("notebook ended (kernel down, run known)", re.compile(r"nbscale-step INFO notebook [A-Z]+")),
    ("HTML rendered and logged", re.compile(r"nbscale-step INFO HTML and MLflow logging")),
    ("step done", re.compile(r"nbscale-step INFO SUCCEEDED")),
    ("worker recorded the end", re.compile(r"^\S+ \S+ INFO run nbs-\w+: [A-Z]+")),
]
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def small_notebook(path: Path) -> Path:
    """Three cells, one parameter, one metric: the shape of a quick experiment."""
    params = new_code_cell("x = 1  # a number")
    params.metadata["tags"] = ["parameters"]
    cells = [params, new_code_cell("y = x * 2"), new_code_cell("print(y)")]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``argv``; (its start as epoch seconds, wall seconds, CPU seconds of it and the children it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, epoch = time.perf_counter(), time.time()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return epoch, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def phases_of(home: Path, started: float) -> dict[str, float]:
    """Seconds from ``started`` to each mark of the newest run's log in ``home``."""
    runs = sorted((home / "runs").glob("nbs-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        return {}
    marks: dict[str, float] = {}
    for line in (runs[-1] / "log.txt").read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - started
        for name, pattern in PHASES:
            if pattern.search(line) and (name != "step started" or name not in marks):
                marks[name] = at
    return marks


def machine() -> str:
    """A label for the figures: cores, memory, Python."""
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem_gb:.0f} GB, Python {platform.python_version()}, {platform.machine()}"


def _stop_agent(home: Path) -> None:
    from workflow_compiler.tracking import agent

    agent.stop(home)  # the agent we started, by its pid file


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-only", action="store_true", help="leave out train.ipynb (a quicker run)")
    parser.add_argument("--phases", action="store_true", help="also time the marks of each nbscale run's log")
    parser.add_argument("--baseline", type=Path, default=None, help="a source tree to run the nbscale modes from too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small_notebook(work / "small.ipynb")
        shutil.copy(EXAMPLE, work / "train.ipynb")
        nbscale_small = [str(BIN / "nbscale"), "run", "small.ipynb", "-p", "x=3"]
        commands = {"papermill": [str(BIN / "papermill"), "small.ipynb", "out.ipynb", "-p", "x", "3"],
                    "nbscale": nbscale_small, "nbscale_first": nbscale_small, "nbscale_cold": nbscale_small}
        if not args.small_only:  # the realistic case: a notebook that imports scikit-learn and logs metrics to MLflow itself
            commands["papermill_train"] = [str(BIN / "papermill"), "train.ipynb", "out.ipynb", "-p", "n_estimators", "20"]
            commands["nbscale_train"] = [str(BIN / "nbscale"), "run", "train.ipynb", "-p", "n_estimators=20"]
        sides = {"": Path(__file__).resolve().parents[1], **({"baseline_": args.baseline.resolve()} if args.baseline else {})}
        runs: dict[str, tuple[list[str], dict[str, str], Path]] = {}
        for prefix, tree in sides.items():
            home = work / f"{prefix}home"
            env = {**os.environ, "NBSCALE_HOME": str(home), "PYTHONPATH": str(tree)}
            env.pop("MLFLOW_TRACKING_URI", None)
            for name, argv_ in commands.items():
                if prefix and not name.startswith("nbscale"):
                    continue
                runs[prefix + name] = (argv_, {**env, "NBSCALE_TRACKING_AGENT": "0"} if name == "nbscale_cold" else env, home)
        try:
            for argv_, env, _home in runs.values():  # warm the OS caches once, untimed
                timed(argv_, work, env)
            times: dict[str, list[float]] = {name: [] for name in runs}
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            marks: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, (argv_, env, home) in runs.items():
                    if name.endswith("nbscale_first"):
                        _stop_agent(home)
                    started, wall, used = timed(argv_, work, env)
                    times[name].append(wall)
                    cpu[name].append(used)
                    if args.phases and "nbscale" in name:
                        marks[name].append({**phases_of(home, started), "exited": wall})
        finally:
            for _argv, _env, home in runs.values():
                _stop_agent(home)
    return report(args, times, cpu, marks)


def report(args: argparse.Namespace, times: dict[str, list[float]], cpu: dict[str, list[float]],
           marks: dict[str, list[dict[str, float]]]) -> dict[str, object]:
    """Write results/run_overhead.json and print the figures."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = {name: medians[name] / medians["papermill_train" if "train" in name else "papermill"]
             for name in medians if "nbscale" in name}
    phases = {name: {phase: statistics.median(m[phase] for m in runs if phase in m)
                     for phase in [p for p, _ in PHASES] + ["exited"] if any(phase in m for m in runs)}
              for name, runs in marks.items() if runs}
    result = {
        "benchmark": "run_overhead",
        "machine": machine(),
        "repeats": args.repeats,
        "baseline": str(args.baseline) if args.baseline else None,
        "seconds": times,
        "median_seconds": medians,
        "median_cpu_seconds": {name: statistics.median(values) for name, values in cpu.items()},
        "ratios": ratio,
        "phases_median_seconds": phases,
        "load_average_1min": os.getloadavg()[0],
        "targets": {"nbscale": 1.1, "nbscale_first": 1.3, "nbscale_cold": 1.3},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "run_overhead.json").write_text(json.dumps(result, indent=2))
    print(f"[{result['machine']}, load average {result['load_average_1min']:.1f}]")
    for name, median in medians.items():
        shown = f"  {ratio[name]:.2f}x" if name in ratio else ""
        print(f"{name:<28} wall {median:6.2f}s  cpu {result['median_cpu_seconds'][name]:6.2f}s{shown}")  # type: ignore[index]
    for name, marks_ in phases.items():
        print(f"\n{name}: seconds from the command's start")
        for phase, at in marks_.items():
            print(f"  {at:6.2f}  {phase}")
    return result


if __name__ == "__main__":
    main()
