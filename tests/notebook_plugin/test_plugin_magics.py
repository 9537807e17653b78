"""The %nbscale magics in real kernels: alone (local executor) and inside a server (REST API)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import LocalKernel, run_in_server_kernel
from nbplugin_helpers import JupyterProcess, write_notebook

from notebook_plugin.magics import build_magic_parser, space_lines_to_params
from workflow_compiler.cli_args import ArgumentError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def magic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("magic-root")
    write_notebook(root / "quick.ipynb", "greeting = 'hello'\ntimes: int = 1", "print(greeting * times)")
    write_notebook(root / "slow.ipynb", "seconds = 300", "import time\nprint('sleeping', seconds, flush=True)\ntime.sleep(seconds)")
    write_notebook(root / "metric.ipynb", "times: int = 1", "import mlflow\nmlflow.log_metric('doubled', times * 2)")
    return root


@pytest.fixture(scope="module")
def kernel(magic_root: Path) -> Iterator[LocalKernel]:
    k = LocalKernel(magic_root)
    out = k.run("%load_ext notebook_plugin")
    assert out.error is None, out
    yield k
    k.close()


def run_id_in(text: str) -> str:
    found = re.search(r"nbs-[0-9a-f]{10}", text)
    assert found, text
    return found.group(0)


def test_run_in_a_local_kernel_returns_a_handle(kernel: LocalKernel, magic_root: Path) -> None:
    out = kernel.run("h = %nbscale run quick.ipynb -p greeting=salut- -p times=2\nprint('STATUS', h.status, h.id)")
    assert out.error is None, out
    assert "started nbs-" in str(out) and "local executor" in str(out)
    assert "STATUS SUCCEEDED" in str(out)
    assert "text/html" in out.mimetypes  # the results table
    assert "application/vnd.jupyter.widget-view+json" in out.mimetypes  # live progress as a widget
    out = kernel.run("import json, pathlib\nrec = h.refresh()\nprint('PROG', rec['progress']['done'], rec['progress']['total'])\n"
                     "print('OUT', 'salut-salut-' in pathlib.Path(rec['links']['output_notebook']).read_text())")
    assert "OUT True" in str(out), out


def test_status_logs_and_cancel(kernel: LocalKernel) -> None:
    out = kernel.run("h = %nbscale run slow.ipynb --detach\nprint('ID', h.id)")
    run_id = run_id_in(str(out))
    out = kernel.run("import time\nfor _ in range(240):\n    if 'sleeping 300' in h.logs(): break\n    time.sleep(0.5)\n%nbscale status")
    assert run_id in str(out) and "RUNNING" in str(out)
    out = kernel.run(f"c = %nbscale cancel {run_id}\nprint('FINAL', c.status)")
    assert "FINAL KILLED" in str(out), out
    out = kernel.run(f"%nbscale logs {run_id}")
    assert out.error is None and "sleeping 300" in str(out), out  # the notebook's own output, from the run's log


def test_the_handle_waits_reports_and_cancels(kernel: LocalKernel) -> None:
    """``wait()`` blocks until the end, ``best`` is a run's metrics, ``cancel()`` stops a running run."""
    out = kernel.run("h = %nbscale run metric.ipynb -p times=21 --detach\nh.wait(timeout=240, progress=False)\n"
                     "print('DONE', h.record['status'], h.best)")
    assert "DONE SUCCEEDED {'doubled': 42.0}" in str(out), out
    out = kernel.run("s = %nbscale run slow.ipynb --detach\nimport time\nfor _ in range(240):\n"
                     "    if 'sleeping' in s.logs(): break\n    time.sleep(0.5)\n"
                     "print('CANCELLED', s.cancel().record['status'], s.wait(timeout=120, progress=False).status)")
    assert "CANCELLED KILLED KILLED" in str(out), out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%nbscale run quick.ipynb -p times=many", "expects int"),
        ("%nbscale run quick.ipynb -p nope=1", "unknown parameter 'nope'"),
        ("%nbscale run ../elsewhere.ipynb", "outside"),
        ("%nbscale run quick.ipynb --gpus lots", "invalid int value"),
        ("%nbscale launch quick.ipynb", "invalid choice"),
        ("%%nbscale run quick.ipynb\nx: 1", "for sweeps"),
        ("%%nbscale sweep quick.ipynb --metric m --mode max\nnot a space line", "is not 'name: space'"),
        ("%%nbscale sweep quick.ipynb --metric m --mode max\ntimes: randint(9, 1)", "swap them"),
        ("%%nbscale sweep quick.ipynb --metric m\ntimes: randint(1, 3)", "--mode max or --mode min"),  # never guessed
    ],
)
def test_bad_input_is_a_usage_error(kernel: LocalKernel, line: str, expected: str) -> None:
    out = kernel.run(line)
    text = str(out)
    assert "UsageError: " in text, text  # IPython shows a usage error as one line, no traceback
    assert "Traceback" not in text
    assert expected in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["logs"], "%nbscale logs: the following arguments are required: RUN_ID"),
        (["cancel"], "%nbscale cancel: the following arguments are required: RUN_ID"),
        (["launch", "x.ipynb"], "%nbscale: argument COMMAND: invalid choice: 'launch'"),
    ],
)
def test_a_parse_error_names_its_command_not_the_whole_usage(argv: list[str], message: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        build_magic_parser().parse_args(argv)
    assert str(caught.value).startswith(message), caught.value


def test_cell_lines_become_sweep_params() -> None:
    assert space_lines_to_params("n: randint(50, 400)  # trees\n\nlr: loguniform(1e-3, 0.3)\n") == [
        "n=randint(50, 400)", "lr=loguniform(1e-3, 0.3)"]
    args = build_magic_parser().parse_args(["sweep", "train.ipynb", "--samples", "20", "--metric", "val_accuracy", "--mode", "max"])
    assert (args.samples, args.metric, args.mode) == (20, "val_accuracy", "max")


def test_magics_inside_a_server_use_its_rest_api(magic_root: Path, tmp_path: Path) -> None:
    server = JupyterProcess("server", magic_root, tmp_path / "state").start()
    try:
        cells = ["%load_ext notebook_plugin",
                 "h = %nbscale run quick.ipynb -p greeting=via-rest --no-progress\nprint('STATUS', h.status)"]
        outs = asyncio.run(run_in_server_kernel(server.url, server.token, "", cells))
        assert outs[1].error is None, outs[1]
        assert "Jupyter server" in str(outs[1]) and "STATUS SUCCEEDED" in str(outs[1])
        run_id = run_id_in(str(outs[1]))
        status, listing = server.api("GET", "runs")
        assert status == 200 and run_id in [r["id"] for r in listing["runs"]]  # the Runs panel sees it
    finally:
        server.stop()


def test_sweep_cell_reaches_the_submit_path(kernel: LocalKernel) -> None:
    """The cell's spaces and the flags build a RunSpec with a sweep, submitted as a sweep (then cancelled here)."""
    import re

    out = kernel.run("%%nbscale sweep quick.ipynb --samples 2 --metric m --mode max --detach\ntimes: randint(1, 3)  # repeat")
    started = re.search(r"started (nbs-[0-9a-f]{10})", str(out))
    assert started, out
    kind = kernel.run(f"s = %nbscale status {started.group(1)}\n"
                      "print('KIND', s.record['kind'], s.record['progress']['unit'], s.record['progress']['total'])")
    assert "KIND sweep trials 2" in str(kind), kind  # a sweep of two trials, not a single run
    cancelled = kernel.run(f"%nbscale cancel {started.group(1)}")
    # its Ray has not started yet: nothing can have finished, so the cancel must stop it
    assert f"nbscale: {started.group(1)} KILLED" in str(cancelled), cancelled
