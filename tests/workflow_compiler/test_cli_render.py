"""What the terminal shows: 80 columns, paths and links whole on their own lines, one quota line, MLflow UI hints."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pytest
from rich.console import Console

from workflow_compiler import cli_render
from workflow_compiler.executors.base import Executor
from workflow_compiler.store import Progress, RunRecord, format_duration

LONG_NOTEBOOK = "experiments/a-rather-long-folder-name/another-level/train_gradient_boosting_with_features.ipynb"
OUTPUT = "/home/someone/.nbscale/runs/nbs-0123456789/outputs/train-gradient-boosting/output.ipynb"


@pytest.fixture
def ui_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A port on 127.0.0.1 the MLflow links point at; listening, or closed again when the test closes it."""
    server = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setenv("NBSCALE_MLFLOW_UI", f"http://127.0.0.1:{server.getsockname()[1]}")
    yield server
    server.close()


def _record(**update: object) -> RunRecord:
    from workflow_compiler.mlflow_ui import mlflow_run_link

    fields = {"id": "nbs-0123456789", "notebook": LONG_NOTEBOOK, "status": "SUCCEEDED", "started": "2026-12-01T22:25:04+00:00",
              "finished": "2026-12-01T22:25:09+00:00", "mlflow_run_id": "f" * 32, "metrics": {"accuracy": 0.93},
              "links": {"mlflow": mlflow_run_link("1", "f" * 32), "output_notebook": OUTPUT}, "progress": Progress(done=2, total=2)}
    return RunRecord.model_validate({**fields, **update})


def _printed(render: object, **print_options: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    if callable(render):
        render(console)
    else:
        console.print(render, **print_options)
    return out.getvalue()


def _long_lines_are_whole(text: str, *wholes: str) -> None:
    assert "…" not in text
    for line in text.splitlines():
        assert len(line) <= 80 or line.strip() in wholes or line.strip().startswith("mlflow ui "), line
    for whole in wholes:
        assert any(line.strip() == whole for line in text.splitlines()), (whole, text)


def test_the_summary_fits_80_columns_with_paths_whole(ui_port: socket.socket) -> None:
    record = _record()
    text = _printed(lambda console: cli_render.summary(record, console))
    _long_lines_are_whole(text, OUTPUT, record.links["mlflow"])
    assert "MLflow UI not running" not in text  # something listens where the link points


def test_a_link_nothing_serves_says_how_to_start_the_mlflow_ui(ui_port: socket.socket) -> None:
    port = ui_port.getsockname()[1]
    ui_port.close()
    text = _printed(lambda console: cli_render.summary(_record(), console))
    assert "make mlflow-ui" in text
    command = next(line.strip() for line in text.splitlines() if line.strip().startswith("mlflow ui "))
    assert "--backend-store-uri sqlite:///" in command and command.endswith(f"--host 127.0.0.1 --port {port}")


@pytest.mark.parametrize("kind", ["run", "sweep", "pipeline"])
def test_the_run_list_fits_80_columns_with_notebooks_whole(ui_port: socket.socket, kind: str) -> None:
    records = [_record(kind=kind, progress=Progress(done=123, total=200, unit="trials"), status="RUNNING", finished=None)] * 2
    text = _printed(cli_render.runs_table(records, 7), soft_wrap=True)
    _long_lines_are_whole(text, LONG_NOTEBOOK)
    assert "nbscale runs (2 of 7)" in text and "123/200 trials" in text and "2026-12-01 22:25" in text


def test_the_quota_line_says_quotas_are_off_once() -> None:
    from hub_extension.client import QUOTAS_OFF

    text = _printed(cli_render.quota_table(dict(QUOTAS_OFF)))
    assert text.count("quotas are off") == 1, text


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, "0s"), (21.0, "21s"), (65.0, "1m 05s"), (7325.0, "2h 02m")])
def test_durations_read_as_the_runs_panel_shows_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


class _FinishingExecutor:
    """Gives the run's records in turn: cells all done while the step still writes its HTML, then ended."""

    def __init__(self, *records: RunRecord) -> None:
        self.records = list(records)

    def get(self, run_id: str) -> RunRecord:
        return self.records.pop(0) if len(self.records) > 1 else self.records[0]

    updates = Executor.updates  # follow() reads the records through the executor's updates, as a local run's
    pause = Executor.pause


def test_the_progress_clock_ends_on_the_summarys_duration() -> None:
    """rich's own clock stopped at the last cell, seconds before the run ended and the summary's duration."""
    cells_done = _record(status="RUNNING", finished=None, started="2000-01-01T00:00:00+00:00")
    ended = _record(started="2000-01-01T00:00:00+00:00", finished="2000-01-01T00:00:21+00:00")
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    final = cli_render.follow(_FinishingExecutor(cells_done, ended), cells_done, console, interval=0)  # type: ignore[arg-type]
    cli_render.summary(final, console)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("2/2 cells 21s"), lines[0]
    assert lines[1] == "SUCCEEDED nbs-0123456789 in 21s"
