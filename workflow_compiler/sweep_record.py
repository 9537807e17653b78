"""A sweep as a run record: the fields a sweep driver's files give, and ``nbscale sweep``'s own record.

The sweep driver writes ``sweeps/<id>/progress.json`` while it runs and ``result.json`` when it
ends. Whoever drives it (the local executor's worker for the REST API and the magics, or the
``nbscale sweep`` command in the user's terminal) turns them into the same record fields here, so
every sweep is in the one run list whatever started it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .mlflow_ui import mlflow_run_link
from .private_files import private_folder, write_private
from .runtime.files import read_json
from .store import Progress, RunRecord, RunStore, nbscale_home, process_start, utcnow
from .sweep.logs import DRIVER_LOG
from .sweep.results import TrialRow, failure_reason

if TYPE_CHECKING:
    from .spec import RunSpec

log = logging.getLogger(__name__)

#: Seconds between two copies of the driver's progress into the record (the panel polls about as often).
PUBLISH_INTERVAL = 0.5


def sweep_progress(data: dict[str, Any]) -> tuple[Progress, dict[str, Any] | None]:
    """Trial counts and the best so far, from the sweep driver's progress.json."""
    counts = data.get("counts") or {}
    done = sum(int(counts.get(k, 0)) for k in ("COMPLETED", "EARLY_STOPPED", "FAILED", "KILLED"))
    progress = Progress(done=done, total=int(data.get("total") or done), unit="trials", running=int(counts.get("RUNNING", 0)),
                        stopped=int(counts.get("EARLY_STOPPED", 0)), failed=int(counts.get("FAILED", 0)))
    return progress, data.get("best")


def sweep_outcome(summary: dict[str, Any]) -> dict[str, Any]:
    """Best trial, parent MLflow run and its link, from the sweep driver's result.json."""
    best = summary.get("best") or None
    fields: dict[str, Any] = {"mlflow_run_id": summary.get("parent_run_id"), "mlflow_experiment_id": summary.get("experiment_id")}
    if best:
        fields["best"] = {"params": best.get("params"), "metric": summary.get("metric"), "value": best.get("value")}
        if isinstance(best.get("value"), (int, float)):
            fields["metrics"] = {str(summary.get("metric")): float(best["value"])}
    if fields["mlflow_run_id"] and fields["mlflow_experiment_id"]:
        fields["links"] = {"mlflow": mlflow_run_link(fields["mlflow_experiment_id"], fields["mlflow_run_id"])}
    return fields


@contextmanager
def recorded_sweep(spec: RunSpec | None, *, run_id: str, store: RunStore | None = None, lease_id: str | None = None,
                   lease_gpus: int = 0) -> Iterator[RunRecord]:
    """Keep the record of a sweep this process drives (``nbscale sweep``) current, from start to end.

    A new sweep gets a RUNNING record under ``run_id`` (also the driver's sweep id); a resumed one
    (``spec`` None) has its record set RUNNING again, its first start kept: ``nbscale runs`` shows
    the sweep's whole time, from that start to the end of its last resume. While the block runs its progress is copied
    in every ``PUBLISH_INTERVAL`` s; the block's end writes the outcome from ``result.json``, and an
    exception ends the record FAILED (KILLED for Ctrl-C and SIGTERM). The record's pid is this process, so
    ``nbscale cancel`` stops the sweep as the driver's own SIGTERM handler does.
    """
    with _terminated_as_exit():  # from before the record exists: SIGTERM then ends it KILLED
        yield from _recorded(spec, run_id=run_id, store=store or RunStore(), lease_id=lease_id, lease_gpus=lease_gpus)


def _recorded(spec: RunSpec | None, *, run_id: str, store: RunStore, lease_id: str | None, lease_gpus: int) -> Iterator[RunRecord]:
    from .submit import record_for

    sweep_dir = nbscale_home() / "sweeps" / run_id
    running = {"status": "RUNNING", "started": utcnow(), "finished": None, "error": None, "pid": os.getpid(),
               "pid_start": process_start(os.getpid())}
    if spec is None:
        record = store.update(run_id, **{**running, "started": store.get(run_id).started or running["started"]})
    else:
        run_dir = private_folder(private_folder(nbscale_home() / "runs") / run_id)
        write_private(run_dir / "log.txt", f"nbscale sweep {run_id} shows its progress in the terminal that started it.\n"
                      f"Its driver's log (Ray Tune's messages, failed trials' tracebacks): {sweep_dir / DRIVER_LOG}\n"
                      f"Each trial's output notebook: under {sweep_dir / 'trials'}\n".encode())
        record = store.create(record_for(spec, run_id=run_id).model_copy(
            update={**running, "run_dir": str(run_dir), "lease_id": lease_id, "lease_gpus": lease_gpus}))
    stop = threading.Event()
    publisher = threading.Thread(target=_publish_until, args=(store, run_id, sweep_dir, stop), name="sweep-record", daemon=True)
    publisher.start()
    outcome: dict[str, Any] = {"status": "FAILED", "error": "the sweep ended before it recorded a result"}
    try:
        yield record
        summary = read_json(sweep_dir / "result.json")
        if summary:
            outcome = {"status": summary.get("status", "FAILED"), "error": _error(summary), **sweep_outcome(summary)}
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM (`timeout`, `nbscale cancel`) before the sweep's own handler
        outcome = {"status": "KILLED", "error": "cancelled"}
        raise
    except Exception as exc:
        outcome = {"status": "FAILED", "error": getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        stop.set()
        publisher.join()
        _publish(store, run_id, sweep_dir)
        store.update(run_id, finished=utcnow(), **outcome)


#: The exit code of a command that SIGTERM ended, as a shell reports one the signal killed.
EXIT_TERMINATED = 128 + signal.SIGTERM


@contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM raises ``SystemExit(143)`` in this block, where it was the default (the process ended at once).

    Before the sweep's own handler is set (while MLflow is reached, before Ray connects), a
    ``timeout`` or a closed terminal killed the command outright: its record stayed RUNNING until a
    later look called it lost (FAILED) and ended it then. Raised, it ends the record KILLED, now.
    A handler someone else set (the sweep's, a caller's ``SIG_IGN``) and threads other than the main one are left alone.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminated(signum: int, _frame: Any) -> None:
        raise SystemExit(EXIT_TERMINATED)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _error(summary: dict[str, Any]) -> str | None:
    status, counts = summary.get("status"), summary.get("counts") or {}
    if status == "KILLED":
        return "cancelled"
    if status == "FAILED":
        trials = [TrialRow.model_validate(t) for t in summary.get("trials") or []]
        if trials:  # the panel and `nbscale status` show this line alone: say why, not where to look
            return failure_reason(trials)
        return f"no trial completed: {counts.get('FAILED', 0)} of {counts.get('total', 0)} failed; see `nbscale sweep` output"
    return None


def _publish(store: RunStore, run_id: str, sweep_dir: Path) -> None:
    data = read_json(sweep_dir / "progress.json")
    if data:
        progress, best = sweep_progress(data)
        store.update(run_id, progress=progress, best=best)


def _publish_until(store: RunStore, run_id: str, sweep_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(PUBLISH_INTERVAL):
        try:
            _publish(store, run_id, sweep_dir)
        except Exception:  # a busy store must not end the sweep: the next copy catches up
            log.warning("sweep %s: could not copy progress into its record", run_id, exc_info=True)
