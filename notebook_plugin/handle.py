"""The object ``%nbscale run`` returns: a handle on one run, with live progress in the cell."""

from __future__ import annotations

import html
import time
from typing import Any

from workflow_compiler.mlflow_ui import MLFLOW_UI_DOWN, mlflow_ui_command, mlflow_ui_down
from workflow_compiler.store import TERMINAL, format_duration

from .client import RunClient


class RunHandle:
    """One run (or sweep): ``.status``, ``.wait()``, ``.best``, ``.cancel()``, ``.logs()``.

    The record is the REST API's JSON form; ``.record`` is the last one fetched.
    """

    def __init__(self, client: RunClient, record: dict[str, Any]) -> None:
        self.client = client
        self.record = record
        self.id: str = record["id"]

    def refresh(self) -> dict[str, Any]:
        """Fetch the record again."""
        self.record = self.client.get(self.id)
        return self.record

    @property
    def status(self) -> str:
        """PENDING, RUNNING, SUCCEEDED, FAILED or KILLED (fetched now)."""
        return str(self.refresh()["status"])

    @property
    def done(self) -> bool:
        """True once the run has a final status."""
        return self.status in TERMINAL

    @property
    def best(self) -> dict[str, Any] | None:
        """A sweep's best trial (``params``, ``metric``, ``value``), or a run's metrics."""
        record = self.refresh()
        return record.get("best") or (record.get("metrics") or None)

    @property
    def metrics(self) -> dict[str, float]:
        """The run's last metric values."""
        return dict(self.refresh().get("metrics") or {})

    def wait(self, timeout: float | None = None, *, progress: bool = True, interval: float = 0.5) -> RunHandle:
        """Block until the run ends (or ``timeout`` s), with a progress bar in the cell."""
        bar = _ProgressBar(self.record) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                record = self.refresh()
                if bar:
                    bar.update(record)
                if record["status"] in TERMINAL or (deadline is not None and time.monotonic() > deadline):
                    return self
                time.sleep(interval)
        finally:
            if bar:
                bar.close(self.record)

    def cancel(self) -> RunHandle:
        """Stop the run; its partial output is kept."""
        self.record = self.client.cancel(self.id)
        return self

    def logs(self) -> str:
        """The whole log so far."""
        text, _ = self.client.logs(self.id, 0)
        return text

    def __repr__(self) -> str:
        r = self.record
        return f"<RunHandle {self.id} {r.get('kind', 'run')} {r.get('notebook')} {r.get('status')}>"


class _ProgressBar:
    """tqdm (the notebook widget under Jupyter, text elsewhere) driven by the record's progress."""

    def __init__(self, record: dict[str, Any]) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        progress = record.get("progress") or {}
        self.bar = tqdm(total=progress.get("total") or None, unit=progress.get("unit") or "cells",
                        desc=f"{record['id']} {status_label(record)}", leave=True)

    def update(self, record: dict[str, Any]) -> None:
        progress = record.get("progress") or {}
        if progress.get("total") and self.bar.total != progress["total"]:
            self.bar.total = progress["total"]
        self.bar.n = int(progress.get("done") or 0)
        extra = ", ".join(f"{progress[k]} {k}" for k in ("running", "stopped", "failed") if progress.get(k))
        self.bar.set_description(f"{record['id']} {status_label(record)}" + (f" ({extra})" if extra else ""), refresh=False)
        self.bar.refresh()

    def close(self, record: dict[str, Any]) -> None:
        if record.get("status") == "SUCCEEDED" and self.bar.total:
            self.bar.n = self.bar.total
            self.bar.refresh()
        self.bar.close()


def status_label(record: dict[str, Any]) -> str:
    """The record's status as people read it ("queued in team-a" while Kueue holds every step)."""
    return str(record.get("status_label") or str(record.get("status", "")).lower())


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _links(record: dict[str, Any], *, local_files: bool) -> str:
    links = record.get("links") or {}
    names = {"mlflow": "MLflow", "output_notebook": "output notebook", "html": "HTML"}
    parts = []
    for key, label in names.items():
        if key in links:
            href = links[key]
            if href.startswith(("http://", "https://")) or (href.startswith("/") and not local_files):
                parts.append(f'<a href="{html.escape(href, quote=True)}" target="_blank">{label}</a>')
            else:
                parts.append(f"{label}: <code>{_cell(href)}</code>")
    return " · ".join(parts)


def _mlflow_ui_hint(records: list[dict[str, Any]]) -> str:
    """How to start the MLflow UI, once under the table, when the MLflow links point at a UI nothing serves."""
    link = next((r["links"]["mlflow"] for r in records if "mlflow" in (r.get("links") or {})), None)
    if link is None or not mlflow_ui_down(link):
        return ""
    return f"<p><small>{html.escape(MLFLOW_UI_DOWN)}: <code>{html.escape(mlflow_ui_command())}</code></small></p>"


def _metrics(record: dict[str, Any]) -> str:
    best = record.get("best")
    if best:
        return _cell(f"best {best.get('metric', '')} = {best.get('value')} with {best.get('params')}")
    return _cell(", ".join(f"{k} = {v:.4g}" for k, v in (record.get("metrics") or {}).items()))


def records_html(records: list[dict[str, Any]], *, local_files: bool = False) -> str:
    """A results table: id, kind, notebook, status, progress, duration, metrics, links, error.

    ``local_files``: the output links are paths on this machine (the local executor's records), shown
    as text to copy; a browser would resolve them against the Jupyter server and find nothing.
    """
    head = "".join(f"<th>{h}</th>" for h in ("run", "kind", "notebook", "status", "progress", "duration", "metrics", "links", "error"))
    rows = []
    for r in records:
        p = r.get("progress") or {}
        progress = f"{p.get('done', 0)}/{p.get('total', 0)} {p.get('unit', '')}" if p.get("total") else ""
        label = status_label(r)
        status = f"<b>{_cell(r.get('status'))}</b>" + ("" if label == str(r.get("status", "")).lower() else f" {_cell(label)}")
        cells = [_cell(r.get("id")), _cell(r.get("kind")), _cell(r.get("notebook")), status,
                 _cell(progress), format_duration(r.get("duration")), _metrics(r), _links(r, local_files=local_files), _cell(r.get("error"))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = f'<table class="nbscale-runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return table + _mlflow_ui_hint(records)


def records_text(records: list[dict[str, Any]]) -> str:
    """The same table as plain text, for terminals and logs."""
    lines = [f"{'run':16} {'status':10} {'duration':>9}  notebook"]
    for r in records:
        lines.append(f"{r.get('id', ''):16} {r.get('status', ''):10} {format_duration(r.get('duration')):>9}  {r.get('notebook', '')}")
    return "\n".join(lines)
