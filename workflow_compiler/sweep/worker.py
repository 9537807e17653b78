"""Warm trial workers: run a notebook in this process's IPython shell, isolated per trial.

A sweep's trials run in long-lived Ray actors (Tune reuses function-trainable actors between
trials). Each actor keeps one ``InteractiveShell`` and the libraries the notebook imported, so a
trial pays neither a kernel start nor a re-import of pandas/scikit-learn. The notebook itself goes
through papermill with an engine of our own (``nbscale-warm``): papermill injects the parameters
and writes the output notebook exactly as the step runtime does; only the executor differs.

A trial sees what a kernel gives a notebook: ``__name__ == "__main__"``, and ``sys.stdout`` /
``sys.stderr`` that are text files with the process's own file descriptors (``faulthandler``,
``subprocess`` with ``stdout=sys.stdout``). Notebooks without kernelspec metadata are read as
``nbscale run`` reads them (``runtime.execute.notebook_language``). One gap remains where the
trial runs in the Ray worker itself: Tune calls the trainable in a thread, and Python installs
signal handlers only from the main thread (the trial host's child and ``fresh_kernel`` run the
notebook on their main thread). There ``signal.signal`` raises Python's ValueError with what to do
(``SIGNAL_IN_THREAD``).

Isolation per trial (``TrialSandbox``): a fresh user namespace, a fresh random state (``random``,
NumPy, torch reseeded from OS entropy, as in a new process), and the working directory,
environment, ``sys.path``, ``sys.argv``, warnings filters, root logging, signal handlers,
``faulthandler``, matplotlib and pandas options restored afterwards. Modules imported from the user's own files are dropped from
``sys.modules`` after each trial (so their globals start over); installed libraries stay warm.

Not isolated: threads a notebook leaves running, and in-place changes to installed libraries'
module state beyond those above. ``fresh_kernel`` runs each trial in a new process for that.
"""

from __future__ import annotations

import builtins
import copy
import faulthandler
import gc
import logging
import os
import random
import signal
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .cell_output import CellCapture, CellStream, new_output

log = logging.getLogger(__name__)

ENGINE_NAME = "nbscale-warm"
COMPLETED, EARLY_STOPPED, FAILED = "COMPLETED", "EARLY_STOPPED", "FAILED"
_INSTALLED_PREFIXES = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")} | {sys.base_prefix, sys.prefix})


class TrialStopped(BaseException):  # noqa: N818 - a control-flow signal, like SystemExit
    """Raised inside the notebook (from a metric hook) when the scheduler stops the trial early."""


@dataclass(kw_only=True)
class TrialOutcome:
    """How one notebook execution ended."""

    status: str
    output_path: Path
    error: str | None = None
    seconds: float = 0.0
    pid: int = field(default_factory=os.getpid)


def _make_shell() -> Any:
    """The process's one InteractiveShell, with display hooks that capture into nbformat outputs."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    class CapturingDisplayHook(DisplayHook):
        def write_output_prompt(self) -> None:
            return None

        def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
            assert self.shell is not None  # InteractiveShell.init_displayhook passes itself
            cap = self.shell.nbscale_capture
            if cap is not None:
                cap.outputs.append(new_output("execute_result", data=format_dict, metadata=md_dict or {},
                                               execution_count=cap.execution_count))

        def finish_displayhook(self) -> None:
            return None

    class CapturingDisplayPublisher(DisplayPublisher):
        def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
            cap = self.shell.nbscale_capture
            if cap is not None:
                cap.outputs.append(new_output("display_data", data=data, metadata=metadata or {}))

        def clear_output(self, wait: bool = False) -> None:
            cap = self.shell.nbscale_capture
            if cap is not None:
                cap.outputs.clear()

    class TrialShell(InteractiveShell):
        displayhook_class = Type(CapturingDisplayHook)
        display_pub_class = Type(CapturingDisplayPublisher)
        nbscale_capture: CellCapture | None = None
        nbscale_error: tuple[str, str, list[str]] | None = None

        def _showtraceback(self, etype: Any, evalue: Any, stb: list[str]) -> None:
            self.nbscale_error = (getattr(etype, "__name__", str(etype)), str(evalue), list(stb))

    config = Config()
    config.HistoryManager.enabled = False  # no SQLite history file or writer thread per worker
    return TrialShell.instance(config=config, colors="nocolor")


class WarmShellEngine:
    """papermill engine: execute each code cell in the warm shell (registered as ``nbscale-warm``)."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: str | None = None, progress_bar: bool = False,
                         log_output: bool = False, autosave_cell_every: int = 30, **kwargs: Any) -> Any:
        """papermill's Engine contract: run ``nb`` and return it with outputs."""
        from papermill.engines import NotebookExecutionManager

        nb_man = NotebookExecutionManager(nb, output_path=output_path, log_output=log_output,
                                          progress_bar=False, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls._execute_cells(nb_man, kwargs["shell"], kwargs["state"])
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def nb_kernel_name(cls, nb: Any, name: str | None = None) -> str:
        """The kernel is this process; the name is kept only for the notebook's metadata."""
        return name or nb.metadata.get("kernelspec", {}).get("name", "python3")

    @classmethod
    def nb_language(cls, nb: Any, language: str | None = None) -> str:
        """Only Python runs in the warm shell."""
        return language or nb.metadata.get("kernelspec", {}).get("language", "python")

    @classmethod
    def _execute_cells(cls, nb_man: Any, shell: Any, state: _RunState) -> None:
        count = 0
        for index, cell in enumerate(nb_man.nb.cells):
            if cell.cell_type != "code":
                continue
            count += 1
            nb_man.cell_start(cell, index)
            capture = CellCapture()
            capture.execution_count = cell.execution_count = count
            shell.nbscale_capture, shell.nbscale_error = capture, None
            try:
                result = shell.run_cell(cell.source, store_history=False, silent=False)
            finally:
                shell.nbscale_capture = None
            cell.outputs = capture.outputs
            if isinstance(result.error_in_exec, TrialStopped) or state.stopped:
                state.stopped = True
                cell.outputs.append(new_output("stream", name="stderr", text="nbscale: trial stopped early by the scheduler\n"))
                nb_man.cell_complete(cell, index)
                return
            if not result.success:
                ename, evalue, stb = shell.nbscale_error or (type(result.error_in_exec or result.error_before_exec).__name__,
                                                              str(result.error_in_exec or result.error_before_exec), [])
                cell.outputs.append(new_output("error", ename=ename, evalue=evalue, traceback=stb))
                state.error = f"{ename}: {evalue}"
                nb_man.cell_exception(cell, index, exception=result.error_in_exec)
                nb_man.cell_complete(cell, index)
                return
            nb_man.cell_complete(cell, index)


@dataclass
class _RunState:
    stopped: bool = False
    error: str | None = None


class WarmNotebookRunner:
    """Runs notebooks one after another in this process's warm shell."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        self._shell: Any = None

    def run(self, notebook: Path, output_path: Path, parameters: dict[str, Any], *, cwd: Path,
            env: dict[str, str] | None = None, kernel_name: str = "python3",
            context: Callable[[], AbstractContextManager[Any]] | None = None) -> TrialOutcome:
        """Execute ``notebook`` with ``parameters``; the output notebook is written even on failure.

        ``context`` is entered inside the sandbox around the execution (the MLflow run and metric hooks).
        """
        import papermill
        from papermill.engines import papermill_engines
        from papermill.exceptions import PapermillExecutionError

        from ..runtime.execute import notebook_language  # `nbscale run`'s reading of a notebook without kernelspec

        with self._lock:  # one trial at a time per process: the shell and sys.* are process-wide
            if self._shell is None:
                self._shell = _make_shell()
                papermill_engines.register(ENGINE_NAME, WarmShellEngine)
            state = _RunState()
            started = time.perf_counter()
            output_path.parent.mkdir(parents=True, exist_ok=True)
            with TrialSandbox(self._shell, cwd=cwd, env=env or {}), (context or nullcontext)():
                try:
                    papermill.execute_notebook(str(notebook), str(output_path), parameters=parameters, engine_name=ENGINE_NAME,
                                               kernel_name=kernel_name, language=notebook_language(notebook, kernel_name),
                                               progress_bar=False, request_save_on_cell_execute=False,
                                               shell=self._shell, state=state)
                except PapermillExecutionError as exc:
                    state.error = state.error or f"{exc.ename}: {exc.evalue}"
            seconds = time.perf_counter() - started
        status = EARLY_STOPPED if state.stopped else FAILED if state.error else COMPLETED
        return TrialOutcome(status=status, output_path=output_path, error=state.error, seconds=seconds)


_RUNNER: WarmNotebookRunner | None = None


def warm_runner() -> WarmNotebookRunner:
    """This process's runner (created on first use and kept: that is what makes it warm)."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = WarmNotebookRunner()
    return _RUNNER


#: Why a notebook's ``signal.signal`` fails in a trial that runs in a Ray worker's thread, and what to do.
SIGNAL_IN_THREAD = ("signal only works in main thread of the main interpreter, and this sweep trial runs in a thread of a Ray worker "
                    "(no warm trial host: on a cluster, or with NBSCALE_TRIAL_HOST=0). Run the sweep with --fresh-kernel "
                    "(fresh_kernel: true in a sweep file): each trial's notebook then has a process, and a main thread, of its own")


def _explained_signal(original: Callable[..., Any]) -> Callable[..., Any]:
    """``signal.signal`` as a trial off the main thread sees it: Python's ValueError, saying what to do instead."""

    def install(signalnum: int, handler: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            return original(signalnum, handler)
        raise ValueError(SIGNAL_IN_THREAD)

    return install


class TrialSandbox:
    """Gives a trial a fresh namespace and random state, and undoes its process-wide changes."""

    def __init__(self, shell: Any, *, cwd: Path, env: dict[str, str]) -> None:
        self.shell, self.cwd, self.env = shell, cwd, env

    def __enter__(self) -> TrialSandbox:
        self._cwd = os.getcwd()
        self._environ = dict(os.environ)
        self._path, self._argv = list(sys.path), list(sys.argv)
        self._modules = set(sys.modules)
        self._warnings = list(warnings.filters)
        root = logging.getLogger()
        self._log = (root.level, list(root.handlers))
        self._streams = (sys.stdout, sys.stderr)
        self._faulthandler = faulthandler.is_enabled()
        self._signals = _signal_handlers()
        self._signal_function = signal.signal
        if threading.current_thread() is not threading.main_thread():
            signal.signal = _explained_signal(signal.signal)
        os.environ.update(self.env)
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        os.chdir(self.cwd)
        sys.argv = [str(self.cwd / "notebook")]
        sys.path.insert(0, str(self.cwd))
        capture = lambda: self.shell.nbscale_capture  # noqa: E731
        sys.stdout = CellStream(capture, "stdout", self._streams[0])
        sys.stderr = CellStream(capture, "stderr", self._streams[1])
        _fresh_namespace(self.shell)
        reseed_random()
        return self

    def __exit__(self, *exc: object) -> None:
        _fresh_namespace(self.shell)  # drop the trial's objects now, not at the next trial
        sys.stdout, sys.stderr = self._streams
        if not self._faulthandler:
            faulthandler.disable()
        signal.signal = self._signal_function
        for signum, handler in self._signals.items():
            if signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)
        os.chdir(self._cwd)
        os.environ.clear()
        os.environ.update(self._environ)
        sys.path[:], sys.argv[:] = self._path, self._argv
        cast("list[Any]", warnings.filters)[:] = self._warnings  # typeshed says Sequence; it is the list the C module reads
        root = logging.getLogger()
        root.setLevel(self._log[0])
        root.handlers[:] = self._log[1]
        _drop_user_modules(set(sys.modules) - self._modules)
        _reset_library_state()


def _signal_handlers() -> dict[signal.Signals, Any]:
    """The Python-level signal handlers a trial may replace (only the main thread can, and restore them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {signum: signal.getsignal(signum) for signum in signal.valid_signals()}
    return {signum: handler for signum, handler in handlers.items() if handler is not None}


def _fresh_namespace(shell: Any) -> None:
    """An empty user namespace. Like ``shell.reset()`` without its full ``gc.collect()`` (0.3 s with
    pandas and scikit-learn loaded); a young-generation pass frees the usual per-trial cycles."""
    shell.user_ns.clear()
    shell.user_ns.update(__name__="__main__", __builtin__=builtins, __builtins__=builtins)  # as a kernel's namespace starts
    shell.user_ns_hidden.clear()
    shell.history_manager.output_hist.clear()
    shell.init_user_ns()
    gc.collect(1)


def reseed_random() -> None:
    """Fresh entropy, as a new process would have: no trial (and no forked sweep) continues its predecessor's sequence."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(random.randrange(2**63))


def _drop_user_modules(new: set[str]) -> None:
    """Forget modules the trial imported from outside the installed libraries (the user's own files)."""
    for name in new:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None)
        if origin and not os.path.abspath(origin).startswith(_INSTALLED_PREFIXES):
            del sys.modules[name]


#: Each library's options as its last reset left them (``_reset_if_changed``).
_CLEAN_OPTIONS: dict[str, dict[str, Any]] = {}


def _reset_library_state() -> None:
    """Reset process-global options of common libraries a notebook may have changed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")
        matplotlib = sys.modules.get("matplotlib")
        if matplotlib is not None:
            _reset_if_changed("matplotlib", matplotlib.rcParams, matplotlib.rcdefaults)
        pandas = sys.modules.get("pandas")
        if pandas is not None:
            # pandas' options live in this private dict; without it (another layout) every trial resets them
            options = getattr(sys.modules.get("pandas._config.config"), "_global_config", None)
            _reset_if_changed("pandas", options if isinstance(options, dict) else None, lambda: pandas.reset_option("all"))


def _reset_if_changed(name: str, options: dict[str, Any] | None, reset: Callable[[], None]) -> None:
    """``reset()`` unless ``options`` still equal, value by value, what the last reset left.

    ``rcdefaults()`` and ``reset_option("all")`` validate and set every option anew: 2-3 ms together,
    a third of what a trivial trial costs the trial host's child (B2 of issue 19), for options that
    most notebooks never touch. The copy is deep, so a list changed in place also differs.
    """
    if options is not None and name in _CLEAN_OPTIONS and dict.__eq__(options, _CLEAN_OPTIONS[name]) is True:
        return
    _CLEAN_OPTIONS.pop(name, None)
    reset()
    if options is not None:
        try:
            _CLEAN_OPTIONS[name] = copy.deepcopy(dict.copy(options))
        except Exception:  # a value that cannot be copied: that library is reset after every trial
            log.debug("cannot keep a copy of %s's options", name, exc_info=True)


@contextmanager
def quiet_papermill() -> Iterator[None]:
    """papermill logs every input/output path at INFO; a sweep with 1000 trials does not need that."""
    from .logs import logger_level

    with logger_level("papermill", logging.WARNING):
        yield
