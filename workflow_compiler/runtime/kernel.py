"""The step's kernel: started before papermill is imported, so its start-up overlaps the step's own.

A Python kernel takes about a second of CPU to start (ipykernel, IPython); papermill, nbclient and
nbconvert take as long to import in the step. Started one after the other, as papermill does, they
add up; with the warm agent the kernel is launched as soon as the parameters are checked, on the
other core, and handed to papermill's client, which then owns it (and shuts it down) as if it had
started it. A cold step's longest chain is its helper's ``import mlflow`` instead: a kernel started
that early only takes CPU from it, so there the client starts the kernel, through the same manager.

Only jupyter_client is imported here. Kernels of other languages get the step's MLflow run in their
launch environment, so they start later, the usual way (``execute.StepNotebookClient``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync

log = logging.getLogger(__name__)

#: nbclient's default ``ipython_hist_file``: the kernel keeps no history file.
_HISTORY = "--HistoryManager.hist_file=:memory:"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; ipc sockets are "<ip>-<port>"


class StepKernelManager(AsyncKernelManager):
    """A kernel manager that shuts the kernel down without interrupting it first.

    jupyter_client sends SIGINT before every shutdown request, to stop a cell still running. A
    step's cells have all ended by then (a stopped step kills its kernel), so that SIGINT only lands
    in whatever the idle kernel handles at that moment, and it logs "KeyboardInterrupt caught in
    kernel" into a run that succeeded.
    """

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:  # set by shutdown_kernel just before it interrupts
            return
        await super()._async_interrupt_kernel()


def is_python(km: AsyncKernelManager) -> bool:
    """Whether ``km``'s kernel spec is a Python kernel's."""
    return km.kernel_spec is not None and km.kernel_spec.language.lower() == "python"


def python_kernel_manager(kernel_name: str, *, folder: Path) -> StepKernelManager | None:
    """A manager for ``kernel_name`` if it is a Python kernel (not started yet); else, or when the spec cannot be read, None.

    Its sockets are Unix sockets in ``folder`` (the step's private output folder) when the path is
    short enough, TCP on 127.0.0.1 otherwise. None leaves the kernel to papermill, which reports a
    missing kernel with its usual message.
    """
    try:
        km = StepKernelManager(kernel_name=kernel_name)
        if not is_python(km):
            return None
    except Exception as exc:  # noqa: BLE001 - papermill's own start reports it
        log.debug("no manager for kernel %s: %s", kernel_name, exc)
        return None
    ipc = str(folder / "kernel")
    if len(os.fsencode(ipc)) + 6 <= _MAX_SOCKET_PATH:  # no encryption over TCP: ipc keeps the channels the user's own
        km.transport, km.ip = "ipc", ipc
    return km


def start_python_kernel(km: StepKernelManager, *, cwd: Path, env: dict[str, str]) -> bool:
    """Launch ``km``'s kernel now, without waiting for it to be ready; False (papermill starts it later) on failure."""
    try:
        run_sync(km.start_kernel)(extra_arguments=[_HISTORY] if km.ipykernel else [], cwd=str(cwd), env=env)
    except Exception as exc:  # noqa: BLE001 - papermill's own start reports it with its usual message
        log.debug("kernel %s not started ahead: %s", km.kernel_name, exc)
        return False
    log.info("kernel %s starting (%s)", km.kernel_name, km.transport)
    return True


def stop_kernel(km: AsyncKernelManager) -> None:
    """Kill a kernel that was started ahead but never ran the notebook (the step stopped first)."""
    if not km.has_kernel:
        return
    try:
        run_sync(km.shutdown_kernel)(now=True)
    except Exception as exc:  # noqa: BLE001 - it is being killed; a failure here must not hide the step's outcome
        log.warning("could not stop the kernel: %s", exc)
