"""How the CLI shows things: live progress while a run goes, then a summary or a table."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from .mlflow_ui import MLFLOW_UI_DOWN, mlflow_ui_command, mlflow_ui_down
from .redaction import redact

if TYPE_CHECKING:  # the CLI imports this module for every command: models and rich load where used
    from pathlib import Path

    from rich.console import Console, Group
    from rich.progress import Progress
    from rich.table import Table

    from .daemons import Daemon, StopOutcome
    from .errors import NbscaleError, NotebookError, SpecError
    from .executors import Executor
    from .inspection import NotebookSignature
    from .store import RunRecord

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def console(*, stderr: bool = False) -> Console:
    """A new rich console on stdout (or stderr)."""
    from rich.console import Console

    return Console(stderr=stderr)


@functools.cache
def err() -> Console:
    """The console for errors and warnings, made at its first use."""
    return console(stderr=True)


def usage_error(exc: SpecError | NotebookError) -> int:
    """Print a usage error as every command does; its exit code."""
    err().print(f"[red]error:[/] {redact(exc.message)}", highlight=False)
    return EXIT_USAGE


def error_exit(exc: NbscaleError) -> int:
    """Print the error that ended a command; its exit code (``EXIT_USAGE`` for a bad spec or notebook, else ``EXIT_FAILED``)."""
    from .errors import NotebookError, SpecError

    if isinstance(exc, (SpecError, NotebookError)):
        return usage_error(exc)
    err().print(f"[red]error:[/] {redact(exc.message)}", highlight=False)
    return EXIT_FAILED


_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan", "PENDING": "dim"}


def follow(executor: Executor, record: RunRecord, console: Console, *, interval: float = 0.3) -> RunRecord:
    """Show a progress bar (cells of a run, steps of a pipeline) until the run ends, redrawn as the executor reports.

    Its clock is the record's duration, so it keeps going after the last cell (HTML, MLflow, the
    kernel's exit) and ends on the number the summary prints.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from .store import format_duration

    unit = "steps" if record.kind == "pipeline" else "cells"
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[elapsed]}"), console=console,
                  transient=False) as bar:
        task = bar.add_task(f"{record.id} {record.notebook}", total=None, unit=unit, elapsed="")
        step_tasks: dict[str, Any] = {}
        step_clock: dict[str, list[float]] = {}
        for update in executor.updates(record.id, interval=interval):
            record = update
            bar.update(task, completed=record.progress.done, total=record.progress.total or None,
                       description=f"{record.id} {record.status_label}", unit=record.progress.unit or unit,
                       elapsed=format_duration(record.duration))
            if record.kind == "pipeline":
                _update_steps(bar, record, step_tasks, step_clock)
        return record


def _update_steps(bar: Progress, record: RunRecord, tasks: dict[str, Any], clocks: dict[str, list[float]]) -> None:
    """A pipeline's step lines; steps have no times in the record, so their clock is [first seen, ended] here."""
    import time

    from .store import TERMINAL, format_duration

    for step in record.steps:
        if step.status == "PENDING" and not step.error:
            continue
        if step.name not in tasks:
            tasks[step.name] = bar.add_task(f"  {step.name}", total=None, unit="cells", elapsed="")
        clock = clocks.setdefault(step.name, [time.monotonic()])
        if step.status in TERMINAL and len(clock) == 1:
            clock.append(time.monotonic())
        bar.update(tasks[step.name], completed=step.progress.done, total=step.progress.total or None,
                   description=f"  {step.name} {step.error if step.status == 'PENDING' else step.status.lower()}",
                   elapsed=format_duration((clock[1] if len(clock) > 1 else time.monotonic()) - clock[0]))


def summary(record: RunRecord, console: Console) -> None:
    """The closing lines of ``nbscale run``: status, duration, metrics, then each link and path whole.

    Links and paths get a line of their own, printed without wrapping or cropping (rich's soft
    wrap), so a user can copy them from an 80-column terminal.
    """
    from rich.table import Table
    from rich.text import Text

    from .store import format_duration

    style = _STYLE.get(record.status, "")
    duration = format_duration(record.duration) or "-"
    if record.done or not record.progress.detail:
        console.print(Text.assemble((record.status, f"bold {style}"), f" {record.id} in {duration}"))
    else:  # e.g. "nbs-0123456789 queued in team-a for 2s": waiting for admission is not running
        console.print(Text.assemble(f"{record.id} ", (record.status_label, f"bold {style}"), f" for {duration}"))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    if record.error:
        table.add_row("error", Text(record.error))
    for name, value in sorted(record.metrics.items()):
        table.add_row(Text(name), f"{value:.4g}")
    if record.kind == "sweep" and not record.done:
        p = record.progress
        table.add_row("trials", f"{p.done} done, {p.running} running, {p.total} in all" + (f" ({p.failed} failed)" if p.failed else ""))
    if record.kind == "pipeline":
        for step in record.steps:
            table.add_row(Text(f"step {step.name}"), Text.assemble((step.status, _STYLE.get(step.status, "")),
                                                                   f"  {step.error}" if step.error else ""))
    if table.rows:
        console.print(table)
    if record.mlflow_run_id:
        _whole_line(console, f"mlflow run {record.mlflow_run_id}", record.links.get("mlflow"))
        if "mlflow" in record.links and mlflow_ui_down(record.links["mlflow"]):
            console.print(Text(f"  {MLFLOW_UI_DOWN}:", style="dim"), Text(f"  {mlflow_ui_command()}"), sep="\n", soft_wrap=True)
    for key in ("output_notebook", "html"):
        if key in record.links:
            _whole_line(console, key.replace("_", " "), record.links[key])
    if record.kind == "sweep" and sweep_driver_log(record.id).is_file():  # a sweep on a cluster logs there
        _whole_line(console, "driver log", str(sweep_driver_log(record.id)))


def sweep_driver_log(sweep_id: str) -> Path:
    """A sweep's driver log (Ray Tune's messages, failed trials' tracebacks): ``$NBSCALE_HOME/sweeps/<id>/driver.log``."""
    from .store import nbscale_home
    from .sweep.logs import DRIVER_LOG

    return nbscale_home() / "sweeps" / sweep_id / DRIVER_LOG


def _whole_line(console: Console, label: str, value: str | None) -> None:
    from rich.text import Text

    console.print(Text(label + (":" if value else ""), style="dim"))
    if value:
        console.print(Text(f"  {value}"), soft_wrap=True)  # never wrapped nor cut: copied whole


#: Widths of the fixed columns of ``nbscale runs``; with single spaces between them they fill 77 of 80 columns.
_RUN_COLUMNS = (("id", 14), ("kind", 8), ("status", 9), ("progress", 14), ("started", 16), ("duration", 9))


def runs_table(records: list[RunRecord], total: int) -> Group:
    """Recent runs, newest first: one line of fixed columns a run, its notebook path whole on the next."""
    from rich.console import Group
    from rich.text import Text

    from .store import format_duration

    lines: list[Text] = [Text(f"nbscale runs ({len(records)} of {total})", style="bold"),
                         Text(" ".join(name.ljust(width) for name, width in _RUN_COLUMNS).rstrip(), style="dim")]
    for r in records:
        progress = f"{r.progress.done}/{r.progress.total} {r.progress.unit}" if r.progress.total else ""
        duration = format_duration(r.duration)
        started = r.started[:16].replace("T", " ") if r.started else ""
        status = r.phase.upper() if r.phase else r.status  # QUEUED (held by admission), STOPPING (a cancel under way)
        cells = [(r.id, ""), (r.kind, ""), (status, _STYLE.get(r.status, "")), (progress, ""), (started, ""), (duration, "")]
        line = Text()
        for (value, style), (_, width) in zip(cells, _RUN_COLUMNS, strict=True):
            line.append(value.ljust(width) + " ", style=style)
        line.rstrip()
        detail = f"  ({r.progress.detail})" if r.progress.detail and not r.done else ""
        lines += [line, Text(f"  {r.notebook}{detail}", style="dim")]
    return Group(*lines)


def daemons_lines(daemons: list[Daemon]) -> Group:
    """Each warm helper: running with its pid, or not; its pid file's path whole on the next line."""
    from rich.console import Group
    from rich.text import Text

    lines: list[Text] = []
    for d in daemons:
        state = Text.assemble(("running", "green"), f" (pid {d.pid})") if d.running else Text("not running", style="dim")
        lines += [Text.assemble((f"{d.name}: ", "bold"), state), Text(f"  {d.pid_file}", style="dim")]
    lines.append(Text("They leave by themselves when idle; `nbscale daemons stop` ends them now.",
                      style="dim"))
    return Group(*lines)


def daemons_stop_lines(outcomes: list[StopOutcome]) -> str:
    """One line per helper ``daemons stop`` asked to leave: stopped (its process has exited), or why not."""
    said = {"stopped": "stopped the {name} (pid {pid})",
            "running": "the {name} (pid {pid}) did not exit in time; it leaves once idle, or `kill {pid}` ends it now",
            "leaving": "left running: the {name} (pid {pid}) leaves once its sweeps end; the helpers after it were not asked to stop"}
    return "\n".join(said[o.state].format(name=o.name, pid=o.pid) for o in outcomes) or "no daemon was running"


def signature_table(sig: NotebookSignature) -> Table:
    """The parameters a notebook takes."""
    from rich.table import Table

    table = Table(title=f"{sig.path}: {len(sig.parameters)} parameters, {sig.code_cells} code cells")
    for col in ("name", "type", "default", "help"):
        table.add_column(col)
    for p in sig.parameters:
        ptype = p.type + (" | None" if p.nullable and p.type != "any" else "")
        table.add_row(p.name, ptype, p.default_source, p.help)
    return table


#: How to give a notebook a parameters cell, in the editors a user has (``nbscale inspect`` prints it when none is tagged).
NO_PARAMETERS_CELL = (
    "No cell is tagged 'parameters', so nbscale sees no parameters to set. Put your defaults (lr = 0.1) in one "
    "cell and add the tag 'parameters' to it. JupyterLab: select the cell, open the Property Inspector (the gear "
    "icon in the right sidebar), and under Common Tools > Cell Tags add 'parameters'. Notebook 7: View > Right "
    "Sidebar > Show Notebook Tools, then the same Common Tools > Cell Tags."
)


def print_json(data: Any) -> None:
    """One JSON object on stdout, for scripts."""
    print(json.dumps(data, indent=2, default=str))


def quota_table(status: dict[str, Any]) -> Table:
    """The caller's GPU quota: limits, usage and what is left, or why quotas are off."""
    from rich.table import Table

    from hub_extension.client import quota_off_line  # the service's client: imported only for `nbscale quota`

    if not status.get("enabled"):
        table = Table.grid()
        table.add_row(quota_off_line(status))
        return table
    table = Table(title=f"GPU quota of {status.get('user', '?')} (groups: {', '.join(status.get('groups', [])) or 'none'})")
    for col in ("limit", "value", "in use", "left"):
        table.add_column(col)
    limits, usage, left = status.get("limits", {}), status.get("usage", {}), status.get("remaining", {})
    rows = [("max_gpus", "gpus_in_use", "gpus"), ("max_runs", "runs_active", "runs"),
            ("gpu_hours_budget", "gpu_hours_in_window", "gpu_hours"), ("max_gpus_per_run", None, None), ("allowed_pools", None, None)]
    for limit, used, remaining in rows:
        value = limits.get(limit)
        table.add_row(limit, "unlimited" if value is None else str(value), "" if used is None else str(usage.get(used, "")),
                      "" if remaining is None else str(left.get(remaining, "")))
    return table
