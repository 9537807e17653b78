"""The step's papermill plumbing: parameters papermill did not see, and the kernel's quiet shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbformat.v4 import new_code_cell, new_notebook
from papermill.inspection import _infer_parameters

from workflow_compiler.runtime.execute import StepKernelManager
from workflow_compiler.runtime.kernel import python_kernel_manager, start_python_kernel, stop_kernel
from workflow_compiler.runtime.translator import register_translator

PARAMETERS = "limit: int | None = None  # rows to read\nname: str = 'x'\nrate = 0.5\nlayers: list[int] = [1, 2]"


def _notebook() -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}), new_code_cell("print(limit)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_papermill_sees_every_parameter_our_inspection_sees(tmp_path: Path) -> None:
    from papermill.iorw import load_notebook_node

    register_translator()
    nbformat.write(_notebook(), tmp_path / "typed.ipynb")
    nb = load_notebook_node(str(tmp_path / "typed.ipynb"))  # as papermill reads it
    found = {p.name: p for p in _infer_parameters(nb, name="python3", language="python")}
    assert list(found) == ["limit", "name", "rate", "layers"]
    assert found["limit"].inferred_type_name == "int | None" and found["limit"].help == "rows to read"


def test_an_annotated_optional_parameter_is_not_unknown_to_papermill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import papermill

    register_translator()
    nbformat.write(_notebook(), tmp_path / "typed.ipynb")
    with caplog.at_level(logging.WARNING, logger="papermill"):
        out = papermill.execute_notebook(str(tmp_path / "typed.ipynb"), str(tmp_path / "out.ipynb"), parameters={"limit": 5},
                                         kernel_name="python3", progress_bar=False)
    assert "Passed unknown parameter" not in caplog.text
    assert out.cells[-1].outputs[0]["text"] == "5\n"  # and the value was applied


#: Run in the kernel: from the end of this cell on, a SIGINT writes a file instead of being ignored.
_RECORD_SIGINT = """
import signal
def _record(*_):
    open({path!r}, "w").write("interrupted")
get_ipython().kernel.post_handler_hook = lambda: signal.signal(signal.SIGINT, _record)
"""


async def _run_then_shut_down(manager: type[AsyncKernelManager], code: str) -> None:
    km = manager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        reply = await kc.execute_interactive(code, timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)


@pytest.mark.parametrize(("manager", "interrupted"), [(StepKernelManager, False), (AsyncKernelManager, True)])
def test_shutting_the_kernel_down_sends_it_no_sigint(tmp_path: Path, manager: type[AsyncKernelManager], interrupted: bool) -> None:
    """jupyter_client interrupts a kernel before it shuts it down (the second case shows it); a step's does not."""
    marker = tmp_path / "sigint"
    asyncio.run(_run_then_shut_down(manager, _RECORD_SIGINT.format(path=str(marker))))
    assert marker.exists() is interrupted


def _short_folder() -> Path:
    """A private folder short enough for Unix sockets (pytest's tmp_path may not be)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="nbs-k-"))


def test_a_python_kernel_started_ahead_talks_over_private_unix_sockets_and_is_stopped() -> None:
    folder = _short_folder()
    km = python_kernel_manager("python3", folder=folder)
    assert km is not None and km.transport == "ipc" and km.ip.startswith(str(folder))
    assert start_python_kernel(km, cwd=folder, env={**os.environ, "NBSCALE_PROBE": "yes"})
    assert km.has_kernel  # launched, not waited for: the caller goes on importing papermill
    seen: list[str] = []

    async def ask() -> dict[str, Any]:
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            return await kc.execute_interactive("import os; print(os.getcwd(), os.environ['NBSCALE_PROBE'])", timeout=60,
                                                output_hook=lambda msg: seen.append(msg["content"].get("text", "")))
        finally:
            kc.stop_channels()

    assert run_sync(ask)()["content"]["status"] == "ok"  # the loop the kernel was started in, as nbclient's
    assert "".join(seen).split() == [str(folder), "yes"]
    sockets = [p for p in folder.iterdir() if p.name.startswith("kernel-")]
    assert sockets and all(p.is_socket() for p in sockets)
    stop_kernel(km)  # as a step that stopped before papermill took the kernel
    assert not km.has_kernel
    assert not [p for p in folder.iterdir() if p.name.startswith("kernel-")]  # its sockets are removed with it


@pytest.mark.parametrize(("kernel", "long_folder", "expected"), [
    ("no-such-kernel", False, None),  # papermill's own start reports it, as before
    ("python3", True, "tcp"),  # a socket path longer than a Unix socket allows: 127.0.0.1
])
def test_a_kernel_that_cannot_start_ahead_is_left_to_papermill_and_long_paths_use_tcp(
        kernel: str, long_folder: bool, expected: str | None) -> None:
    folder = _short_folder() / ("x" * 120 if long_folder else "")
    folder.mkdir(exist_ok=True)
    km = python_kernel_manager(kernel, folder=folder)
    assert (km.transport if km else None) == expected
