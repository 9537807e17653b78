"""How the CLI shows things: live progress while a run goes, then a summary or a table."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .executors import Executor
from .inspection import NotebookSignature
from .store import RunRecord

_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan", "PENDING": "dim"}


def follow(executor: Executor, record: RunRecord, console: Console, *, interval: float = 0.3) -> RunRecord:
    """Show a progress bar (cells of a run, steps of a pipeline) until the run ends, redrawn as the executor reports."""
    unit = "steps" if record.kind == "pipeline" else "cells"
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(f"{record.id} {record.notebook}", total=None, unit=unit)
        step_tasks: dict[str, Any] = {}
        for update in executor.updates(record.id, interval=interval):
            record = update
            bar.update(task, completed=record.progress.done, total=record.progress.total or None,
                       description=f"{record.id} {record.status_label}", unit=record.progress.unit or unit)
            if record.kind == "pipeline":
                for step in record.steps:
                    if step.status == "PENDING" and not step.error:
                        continue
                    if step.name not in step_tasks:
                        step_tasks[step.name] = bar.add_task(f"  {step.name}", total=None, unit="cells")
                    label = step.error if step.status == "PENDING" else step.status.lower()
                    bar.update(step_tasks[step.name], completed=step.progress.done, total=step.progress.total or None,
                               description=f"  {step.name} {label}")
        return record


def summary(record: RunRecord, console: Console) -> None:
    """The closing lines of ``nbscale run``: status, duration, MLflow run, outputs."""
    style = _STYLE.get(record.status, "")
    duration = f"{record.duration:.1f}s" if record.duration is not None else "-"
    if record.done or not record.progress.detail:
        console.print(f"[bold {style}]{record.status}[/] {record.id} in {duration}")
    else:  # e.g. "nbs-0123456789 queued in team-a for 2.5s": waiting for admission is not running
        console.print(f"{record.id} [bold {style}]{record.status_label}[/] for {duration}", highlight=False)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    if record.error:
        table.add_row("error", record.error)
    if record.mlflow_run_id:
        table.add_row("mlflow run", f"{record.mlflow_run_id}" + (f"  {record.links['mlflow']}" if "mlflow" in record.links else ""))
    for name, value in sorted(record.metrics.items()):
        table.add_row(name, f"{value:.4g}")
    for key in ("output_notebook", "html"):
        if key in record.links:
            table.add_row(key.replace("_", " "), record.links[key])
    if record.kind == "pipeline":
        for step in record.steps:
            table.add_row(f"step {step.name}", f"[{_STYLE.get(step.status, '')}]{step.status}[/]" + (f"  {step.error}" if step.error else ""))
    console.print(table)


def runs_table(records: list[RunRecord], total: int) -> Table:
    """Recent runs, newest first."""
    table = Table(title=f"nbscale runs ({len(records)} of {total})")
    for col in ("id", "kind", "notebook", "status", "progress", "started", "duration"):
        table.add_column(col, no_wrap=col in ("id", "status"), overflow="fold")
    for r in records:
        progress = f"{r.progress.done}/{r.progress.total} {r.progress.unit}" if r.progress.total else ""
        duration = f"{r.duration:.1f}s" if r.duration is not None else ""
        label = r.status if r.done or not r.progress.detail else r.status_label
        table.add_row(r.id, r.kind, r.notebook, f"[{_STYLE.get(r.status, '')}]{label}[/]", progress, r.started or "", duration)
    return table


def signature_table(sig: NotebookSignature) -> Table:
    """The parameters a notebook takes."""
    table = Table(title=f"{sig.path}: {len(sig.parameters)} parameters, {sig.code_cells} code cells")
    for col in ("name", "type", "default", "help"):
        table.add_column(col)
    for p in sig.parameters:
        ptype = p.type + (" | None" if p.nullable and p.type != "any" else "")
        table.add_row(p.name, ptype, p.default_source, p.help)
    return table


def print_json(data: Any) -> None:
    """One JSON object on stdout, for scripts."""
    print(json.dumps(data, indent=2, default=str))


def quota_table(status: dict[str, Any]) -> Table:
    """The caller's GPU quota: limits, usage and what is left, or why quotas are off."""
    if not status.get("enabled"):
        table = Table.grid()
        table.add_row(f"GPU quotas are off: {status.get('reason', 'not inside JupyterHub')}")
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
