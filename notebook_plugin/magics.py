"""``%nbscale`` and ``%%nbscale``: run, sweep and follow notebooks from a notebook cell.

The run and sweep grammar is the ``nbscale`` CLI's own (``workflow_compiler.cli_args`` and
``workflow_compiler.sweep.cli_args``), so ``-p``, ``--gpus`` and the search spaces mean the same
everywhere. Inside a Jupyter server with the nbscale extension runs go through its REST API (and
show in the Runs panel); elsewhere they use the local executor.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.display import HTML, display

from workflow_compiler.cli_args import (
    ThrowingParser,
    add_spec_arguments,
    spec_from_args,
)
from workflow_compiler.errors import NbscaleError
from workflow_compiler.spec import PipelineSpec
from workflow_compiler.store import TERMINAL

from .client import LocalRunClient, RunClient, connect
from .handle import RunHandle, records_html

USAGE = """%nbscale run NOTEBOOK [-p NAME=VALUE ...] [--gpus N] [--detach]
%%nbscale sweep NOTEBOOK --metric NAME --mode {min,max} [--samples N]   (cell: one `name: space` per line)
%nbscale status [RUN_ID]     %nbscale logs RUN_ID [-f]     %nbscale cancel RUN_ID     %nbscale quota"""


def build_magic_parser() -> argparse.ArgumentParser:
    """The ``%nbscale`` grammar: the CLI's run and sweep arguments plus the magic's own commands."""
    from workflow_compiler.sweep.cli_args import add_sweep_arguments

    parser = ThrowingParser(prog="%nbscale", usage=USAGE.replace("%", "%%"), add_help=False)
    # prog names each command in its errors ("%nbscale logs: ..."); argparse would put the whole USAGE there
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ThrowingParser, prog="%nbscale",
                                metavar="COMMAND")
    run = sub.add_parser("run", add_help=False)
    add_spec_arguments(run)
    run.add_argument("--detach", action="store_true", help="return the handle at once; follow with h.wait()")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    sweep = sub.add_parser("sweep", add_help=False)
    add_sweep_arguments(sweep)
    sweep.add_argument("--detach", action="store_true", help="return the handle at once; follow with h.wait()")
    status = sub.add_parser("status", add_help=False)
    status.add_argument("run_id", nargs="?", metavar="RUN_ID")
    status.add_argument("--status", dest="filter", help="only runs with this status")
    logs = sub.add_parser("logs", add_help=False)
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    cancel = sub.add_parser("cancel", add_help=False)
    cancel.add_argument("run_id", metavar="RUN_ID")
    sub.add_parser("quota", add_help=False)
    return parser


def space_lines_to_params(cell: str) -> list[str]:
    """The ``%%nbscale sweep`` cell body (``n_estimators: randint(50, 400)`` per line) as ``--param`` items."""
    items = []
    for number, raw in enumerate(cell.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(("'", '"')) else raw.strip()
        if not line:
            continue
        name, sep, space = line.partition(":")
        if not sep or not name.strip().isidentifier():
            raise UsageError(f"line {number} of the cell: {raw.strip()!r} is not 'name: space', e.g. 'n_estimators: randint(50, 400)'.")
        items.append(f"{name.strip()}={space.strip()}")
    return items


@magics_class
class NbscaleMagics(Magics):
    """The ``%nbscale`` line and cell magic."""

    def __init__(self, shell: Any = None, client: RunClient | None = None) -> None:
        super().__init__(shell)
        self._client = client
        self.parser = build_magic_parser()

    @property
    def client(self) -> RunClient:
        """The backend, found on first use (the server's REST API, or the local executor)."""
        if self._client is None:
            self._client = connect()
        return self._client

    @no_var_expand
    @line_cell_magic
    def nbscale(self, line: str, cell: str | None = None) -> Any:
        """Run, sweep, list, follow or cancel nbscale runs. ``%nbscale`` alone prints the usage."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%nbscale: {exc}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        try:
            args = self.parser.parse_args(argv)
            if cell is not None and args.command != "sweep":
                raise UsageError("%%nbscale as a cell magic is for sweeps: %%nbscale sweep NOTEBOOK ... with one 'name: space' per line.")
            return getattr(self, f"_{args.command}")(args, cell)
        except NbscaleError as exc:
            raise UsageError(exc.message) from None

    # commands -------------------------------------------------------------------------------

    def _run(self, args: argparse.Namespace, cell: str | None) -> RunHandle:
        spec = spec_from_args(args, root=os.getcwd())
        if isinstance(spec, PipelineSpec):
            raise UsageError("%nbscale run takes a notebook here; run pipelines with the nbscale CLI.")
        return self._start(spec, detach=args.detach, progress=args.progress)

    def _sweep(self, args: argparse.Namespace, cell: str | None) -> RunHandle:
        from workflow_compiler.sweep.cli_args import sweep_from_args

        if args.resume:
            raise UsageError("--resume is for the nbscale CLI: nbscale sweep --resume SWEEP_ID.")
        if cell:
            args.sweep_params = [*space_lines_to_params(cell), *args.sweep_params]
        spec = sweep_from_args(args, os.getcwd())
        return self._start(spec, detach=args.detach, progress=args.progress)

    def _start(self, spec: Any, *, detach: bool, progress: bool) -> RunHandle:
        handle = RunHandle(self.client, self.client.submit(spec))
        print(f"nbscale: started {handle.id} on the {self.client.where}")
        if detach:
            return handle
        try:
            handle.wait(progress=progress)
        except KeyboardInterrupt:
            print(f"interrupted: cancelling {handle.id} (partial output is kept)")
            handle.cancel()
        display(HTML(self._table([handle.record])))
        if handle.record["status"] != "SUCCEEDED":
            print(f"nbscale: {handle.id} {handle.record['status']}: {handle.record.get('error') or 'see %nbscale logs ' + handle.id}")
        return handle

    def _table(self, records: list[dict[str, Any]]) -> str:
        return records_html(records, local_files=isinstance(self.client, LocalRunClient))

    def _status(self, args: argparse.Namespace, cell: str | None) -> Any:
        if args.run_id:
            handle = RunHandle(self.client, self.client.get(args.run_id))
            display(HTML(self._table([handle.record])))
            return handle
        records = self.client.list(status=args.filter.upper() if args.filter else None)
        display(HTML(self._table(records) if records else "<p>No runs yet.</p>"))
        return None

    def _logs(self, args: argparse.Namespace, cell: str | None) -> None:
        offset = 0
        while True:
            text, offset = self.client.logs(args.run_id, offset)
            if text:
                print(text, end="", flush=True)
            if not args.follow or (not text and self.client.get(args.run_id)["status"] in TERMINAL):
                return
            if not text:
                time.sleep(0.5)

    def _cancel(self, args: argparse.Namespace, cell: str | None) -> RunHandle:
        handle = RunHandle(self.client, self.client.cancel(args.run_id))
        print(f"nbscale: {handle.id} {handle.record['status']}")
        return handle

    def _quota(self, args: argparse.Namespace, cell: str | None) -> dict[str, Any]:
        from hub_extension.client import quota_off_line

        status = self.client.quota()
        if not status.get("enabled"):
            print(quota_off_line(status))
        return status
