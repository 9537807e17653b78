"""Execute a notebook with papermill through our own engine, which reports progress after every cell.

The engine is papermill's nbclient engine with three changes: the output notebook is written
atomically (a crash never leaves half a file), ``progress.json`` follows every code cell, and the
kernel is started with the environment the step gives it (the MLflow run to log into) and killed at
once when the step is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import papermill  # type: ignore[import-untyped]
from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync
from papermill.clientwrap import PapermillNotebookClient  # type: ignore[import-untyped]
from papermill.engines import (  # type: ignore[import-untyped]
    NBClientEngine,
    NotebookExecutionManager,
    papermill_engines,
)
from papermill.exceptions import PapermillExecutionError  # type: ignore[import-untyped]

from ..tracking.step_tracker import TrackingError
from .files import ProgressFile, write_atomic
from .handoff import gate_code, publish_run_env
from .interrupts import InterruptGuard, StepInterrupted
from .kernel import StepKernelManager, is_python
from .outcome import StepOutcome, cell_error, failed, killed, outcome_of_notebook
from .translator import register_translator

log = logging.getLogger(__name__)

ENGINE_NAME = "nbscale"
#: Seconds between saves of the output notebook while one long cell runs.
AUTOSAVE_SECONDS = 10


class StepExecutionManager(NotebookExecutionManager):
    """papermill's execution bookkeeping, plus atomic saves and ``progress.json``."""

    def __init__(self, nb: Any, *, progress: ProgressFile, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.progress = progress
        self.current_cell: int | None = None
        #: The cell a stop (cancel, deadline) interrupted or kept from starting: not counted as done.
        self.stopped_cell: int | None = None

    def save(self, **kwargs: Any) -> None:
        """Write the notebook as it is now, atomically."""
        if kwargs.get("nb") is not None:
            self.nb = kwargs["nb"]
        if self.output_path:
            write_atomic(Path(self.output_path), nbformat.writes(self.nb).encode("utf-8"))
        self.last_save_time = self.now()

    def notebook_start(self, **kwargs: Any) -> None:
        """Reset the notebook's metadata and count the code cells to run."""
        super().notebook_start(**kwargs)
        total = sum(1 for c in self.nb.cells if _users_code(c))
        self.progress.write(status="RUNNING", cells_done=0, cells_total=total)

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        """Remember which cell runs (to name it if the kernel dies), then let papermill save."""
        self.current_cell = cell_index
        super().cell_start(cell, cell_index, **kwargs)

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        """Save the notebook (papermill) and move the progress on, unless a stop cut the cell short.

        papermill calls this in a ``finally`` after every cell, the one a stop interrupted included.
        """
        super().cell_complete(cell, cell_index, **kwargs)
        if _users_code(cell) and cell_index != self.stopped_cell:
            self.progress.write(cells_done=self.progress.cells_done + 1)
            log.info("cell %s/%s done", self.progress.cells_done, self.progress.cells_total)


def _users_code(cell: Any) -> bool:
    """A code cell the user wrote: papermill's injected parameters are not counted (2 cells show as 2/2, not 3/3)."""
    return bool(cell.cell_type == "code" and "injected-parameters" not in cell.get("metadata", {}).get("tags", []))


class StepNotebookClient(PapermillNotebookClient):
    """papermill's client, giving the kernel the MLflow run to log into.

    ``launch_env`` is known up front; ``run_env()`` blocks until the step's MLflow run exists. A
    Python kernel is started without waiting for it and receives it in ``os.environ`` before the
    first cell runs, so the kernel's start-up overlaps the run's creation; other kernels get both
    in their launch environment. ``km``, a kernel the step started ahead (``kernel.py``), becomes
    the client's own: it is shut down at the end as if the client had started it.
    """

    def __init__(self, nb_man: StepExecutionManager, *, launch_env: dict[str, str], run_env: Callable[[], dict[str, str]],
                 guard: InterruptGuard | None, handoff: Path | None = None, km: StepKernelManager | None = None,
                 **kwargs: Any) -> None:
        super().__init__(nb_man, km=km, kernel_manager_class=StepKernelManager, **kwargs)
        self.owns_km = True
        self._launch_env = launch_env
        self._run_env = run_env
        self._handoff = handoff
        self._guard = guard
        self._python = km is not None and is_python(km)

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        """Start the kernel with our environment plus ``launch_env`` (and ``run_env()`` unless Python)."""
        assert self.km is not None
        self._python = is_python(self.km)
        env = {**os.environ, **self._launch_env}
        if not self._python:
            env.update(self._run_env())
        kwargs.setdefault("env", env)
        await super().async_start_new_kernel(**kwargs)

    start_new_kernel = run_sync(async_start_new_kernel)  # nbclient binds its sync wrappers per class

    def papermill_execute_cells(self) -> None:
        """Export the run's environment into a Python kernel, then run the cells."""
        if self._python and self._handoff is not None:
            # cells start now; the kernel's first `import mlflow` waits for the run (see handoff.py)
            code = gate_code(self._handoff)
            threading.Thread(target=publish_run_env, args=(self._handoff, self._run_env), name="mlflow-handoff", daemon=True).start()
        elif self._python:
            env = self._run_env()
            code = f"import os as _nbscale_os\n_nbscale_os.environ.update({env!r})\ndel _nbscale_os"
        if self._python:
            assert self.kc is not None
            reply = self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False, allow_stdin=False))
            if not reply or reply["content"]["status"] != "ok":
                raise RuntimeError(f"could not set the MLflow run in the kernel's environment: {reply and reply['content']}")
        if self._guard is not None:
            self._guard.check()  # a signal during the kernel's start-up stops the step before any cell
        super().papermill_execute_cells()

    async def async_execute_cell(self, cell: Any, cell_index: int, execution_count: int | None = None,
                                 store_history: bool = True) -> Any:
        """Run one cell, or stop it when the guard is woken by a signal (see interrupts.py)."""
        if self._guard is None:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        try:
            return await self._execute_guarded(self._guard, cell, cell_index, execution_count, store_history)
        except StepInterrupted:
            self.nb_man.stopped_cell = cell_index
            raise

    execute_cell = run_sync(async_execute_cell)

    async def _execute_guarded(self, guard: InterruptGuard, cell: Any, cell_index: int, execution_count: int | None,
                               store_history: bool) -> Any:
        guard.check()
        stop = asyncio.Event()
        with guard.waking(stop.set):
            running = asyncio.ensure_future(super().async_execute_cell(cell, cell_index, execution_count, store_history))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((running, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        if running.done():
            return running.result()
        running.cancel()  # nbclient stops polling the kernel (and calls it a DeadKernelError): not what happened
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(running, timeout=5)
        guard.check()
        raise AssertionError("woken without an interrupt")  # unreachable: only the guard sets `stop`

    async def _async_cleanup_kernel(self) -> None:
        if self._guard is not None and self._guard.interrupted is not None:
            self.shutdown_kernel = "immediate"  # a busy kernel would only be killed after a 5 s wait
        await super()._async_cleanup_kernel()

    _cleanup_kernel = run_sync(_async_cleanup_kernel)


class StepEngine(NBClientEngine):
    """The papermill engine ``nbscale``: see the module docstring."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None, progress_bar: bool = False,
                         log_output: bool = False, autosave_cell_every: int = AUTOSAVE_SECONDS, *,
                         progress: ProgressFile, manager_box: list[StepExecutionManager], **kwargs: Any) -> Any:
        """Execute ``nb``, saving it and ``progress`` after every cell."""
        nb_man = StepExecutionManager(nb, progress=progress, output_path=output_path, progress_bar=False,
                                      log_output=log_output, autosave_cell_every=autosave_cell_every)
        manager_box.append(nb_man)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False, stdout_file: Any = None,
                                 stderr_file: Any = None, start_timeout: int = 60, execution_timeout: int | None = None,
                                 *, launch_env: dict[str, str], run_env: Callable[[], dict[str, str]],
                                 guard: InterruptGuard | None = None, handoff: Path | None = None,
                                 kernel: StepKernelManager | None = None, **kwargs: Any) -> Any:
        """Run every cell with ``StepNotebookClient`` (in ``kernel`` when one was started ahead)."""
        for unused in ("input_path", "timeout", "startup_timeout"):
            kwargs.pop(unused, None)
        client = StepNotebookClient(nb_man, launch_env=launch_env, run_env=run_env, guard=guard, handoff=handoff, km=kernel,
                                    timeout=execution_timeout,
                                    startup_timeout=start_timeout, kernel_name=kernel_name, log=log,
                                    log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file, **kwargs)
        return client.execute()


def register_engine() -> None:
    """Make the ``nbscale`` engine, and our reading of parameters cells, known to papermill (idempotent)."""
    papermill_engines.register(ENGINE_NAME, StepEngine)
    register_translator()


def _format_safe(path: Path) -> str:
    # papermill formats paths with the parameters (`str.format`); doubled braces come back unchanged
    return str(path).replace("{", "{{").replace("}", "}}")


def notebook_language(nb_path: Path, kernel_name: str) -> str | None:
    """The language papermill needs to translate parameters, when the notebook does not say it."""
    nb = nbformat.read(str(nb_path), as_version=4)
    if nb.metadata.get("language_info", {}).get("name") or nb.metadata.get("kernelspec", {}).get("language"):
        return None
    return "python" if kernel_name.startswith("python") else None


def execute_notebook(notebook: Path, output: Path, parameters: dict[str, Any], *, kernel_name: str,
                     launch_env: dict[str, str], run_env: Callable[[], dict[str, str]], progress: ProgressFile,
                     guard: InterruptGuard | None, handoff: Path | None = None, kernel: StepKernelManager | None = None) -> StepOutcome:
    """Run ``notebook`` in its own folder with ``parameters`` injected; the executed copy goes to ``output``.

    ``kernel``: a Python kernel of ``kernel_name`` started ahead (``kernel.start_python_kernel``).

    Never raises for a notebook's own failure: the outcome says what happened. ``StepInterrupted``
    (cancel, deadline) also becomes an outcome, after the kernel is gone and the notebook saved.
    Errors of ``run_env()`` (the MLflow run could not be created) propagate.
    """
    register_engine()
    managers: list[StepExecutionManager] = []
    try:
        nb = papermill.execute_notebook(
            _format_safe(notebook), _format_safe(output), parameters=parameters, engine_name=ENGINE_NAME,
            kernel_name=kernel_name, language=notebook_language(notebook, kernel_name), cwd=str(notebook.parent),
            progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr, autosave_cell_every=AUTOSAVE_SECONDS,
            progress=progress, manager_box=managers, launch_env=launch_env, run_env=run_env, guard=guard, handoff=handoff,
            kernel=kernel,
        )
    except StepInterrupted as exc:
        return killed(exc.reason, exc.exit_code)
    except PapermillExecutionError as exc:
        return cell_error(exc.cell_index, exc.exec_count, exc.ename, exc.evalue)
    except DeadKernelError as exc:
        cell = managers[0].current_cell if managers else None
        return failed(f"the kernel died while running cell {cell}: {exc}", cell_index=cell, ename="DeadKernelError")
    except TrackingError:
        raise
    except Exception as exc:  # kernel missing, kernel start timeout, unreadable notebook...
        log.debug("execution failed", exc_info=True)
        return failed(f"{type(exc).__name__}: {exc}", ename=type(exc).__name__)
    return outcome_of_notebook(nb)
