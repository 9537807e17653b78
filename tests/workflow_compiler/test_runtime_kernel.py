"""The step's papermill plumbing: parameters papermill did not see, and the kernel's quiet shutdown."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_notebook
from papermill.inspection import _infer_parameters

from workflow_compiler.runtime.execute import StepKernelManager
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
