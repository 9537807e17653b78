"""The live sweep display (rich) and the final results table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .logs import DRIVER_LOG
from .results import SweepResult, TrialRow, count_statuses

_STYLE = {"COMPLETED": "green", "EARLY_STOPPED": "yellow", "FAILED": "red", "KILLED": "magenta", "RUNNING": "cyan", "PENDING": "dim"}


class SweepProgress:
    """A live panel: trials done, running, stopped early and failed, and the best so far."""

    def __init__(self, *, sweep_id: str, metric: str, mode: str, total: int, enabled: bool = True, console: Console | None = None) -> None:
        self.sweep_id, self.metric, self.mode, self.total = sweep_id, metric, mode, total
        self.console = console or Console(stderr=True)
        self._live: Live | None = Live(console=self.console, refresh_per_second=4, transient=False) if enabled else None
        self._started = time.monotonic()
        self._trials: list[TrialRow] = []

    def __enter__(self) -> SweepProgress:
        if self._live is not None:
            self._live.start()
            self._live.update(self._render())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            if not self.console.is_terminal:  # rich ends its last frame with a newline on terminals only
                self.console.line()

    def update(self, trials: list[TrialRow]) -> None:
        """Redraw with the current state of every trial."""
        self._trials = trials
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        counts = count_statuses(self._trials)
        done = counts["COMPLETED"] + counts["EARLY_STOPPED"] + counts["FAILED"] + counts["KILLED"]
        line = Text.assemble(
            (f"sweep {self.sweep_id} ", "bold"), f"{done}/{self.total} done  ",
            (f"{counts['RUNNING']} running  ", "cyan"), (f"{counts['EARLY_STOPPED']} stopped early  ", "yellow"),
            (f"{counts['FAILED']} failed  ", "red"), f"{time.monotonic() - self._started:.0f}s")
        scored = [t for t in self._trials if t.status == "COMPLETED" and t.value is not None]
        if scored:
            best = (min if self.mode == "min" else max)(scored, key=lambda t: t.value or 0.0)
            params = ", ".join(f"{k}={v!r}" for k, v in best.params.items())
            return Group(line, Text(f"best {self.metric} = {best.value:.6g}  ({params})", style="green"))
        return Group(line, Text("best: no completed trial yet", style="dim"))


def results_table(result: SweepResult, *, limit: int = 50) -> Table:
    """The final table, sorted by the metric, best first."""
    names = sorted({k for t in result.trials for k in t.params})
    errors = any(t.error for t in result.trials)
    table = Table(title=f"sweep {result.sweep_id}: {result.status} ({result.metric}, {result.mode})")
    for column in ("#", "trial", "status", result.metric, *names, "seconds", *(["error"] if errors else [])):
        table.add_column(column, justify="right" if column in ("#", result.metric, "seconds") else "left",
                         overflow="fold" if column == "error" else "ellipsis")
    for rank, t in enumerate(result.sorted_trials()[:limit], start=1):
        table.add_row(str(rank), t.trial_id, Text(t.status, style=_STYLE.get(t.status, "")),
                      "" if t.value is None else f"{t.value:.6g}", *[repr(t.params.get(n)) for n in names],
                      "" if t.seconds is None else f"{t.seconds:.1f}", *([Text(t.error or "", style="red")] if errors else []))
    return table


def print_result(result: SweepResult, console: Console | None = None) -> None:
    """The table, the best parameters, and where the parent MLflow run is."""
    console = console or Console()
    console.print(results_table(result))
    if result.best:
        console.print(f"[bold]best {result.metric}[/bold] = {result.best['value']:.6g} with {result.best['params']}")
    else:
        console.print("[red]no trial completed[/red]")
    if result.counts.get("FAILED"):
        console.print(f"tracebacks of the failed trials: {Path(result.sweep_dir) / DRIVER_LOG}", markup=False, highlight=False)
    console.print(f"MLflow parent run {result.parent_run_id} (experiment {result.experiment_id}) in {result.tracking_uri}")
