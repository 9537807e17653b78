"""The ``nbscale`` command: inspect, run, compile, and follow notebooks at scale."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli_render as render
from .cli_args import ThrowingParser, add_spec_arguments, spec_from_args
from .cli_cluster import add_cluster_commands, add_show_env_option
from .cli_render import EXIT_FAILED, EXIT_INTERRUPTED
from .cli_render import EXIT_USAGE as EXIT_USAGE  # the exit codes stay part of the command's interface
from .cli_render import console as _console
from .cli_render import err as _err
from .cli_sweep import add_sweep_command, sweep_in_warm_driver
from .errors import NbscaleError, SpecError
from .gc_pause import collector_paused
from .redaction import redact, redact_logs
from .tracking_uri import TELEMETRY_SWITCH, credentials_out_of_uri, telemetry_switch

if TYPE_CHECKING:

    from .executors import Executor
    from .store import RunRecord, RunStore

# Each command imports what it needs when it runs (`nbscale --help`, `inspect`, `runs` and `status`
# must answer at once): the run store's and specs' pydantic models, nbformat, the executors, the
# compiler, MLflow, Ray and the kubernetes client load only inside the commands that use them, and
# rich only to print for people (not for `--help` or `--json`).
# tests/workflow_compiler/test_cli_imports.py holds each light command to that.

#: What ``nbscale --help`` says first: plain text (the module docstring's RST markup would show as typed).
DESCRIPTION = "nbscale: inspect, run, sweep, compile and follow notebooks at scale."


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = ThrowingParser(prog="nbscale", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens underneath")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ThrowingParser)

    p = sub.add_parser("inspect", help="show a notebook's parameters: types, defaults, help")
    p.add_argument("notebook")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("run", help="run a notebook or pipeline on the embedded default (or a cluster)")
    p.defer_arguments(_add_run_arguments)
    p.set_defaults(handler=cmd_run)

    add_sweep_command(sub)

    p = sub.add_parser("compile", help="compile to an Argo Workflow manifest")
    add_spec_arguments(p)
    p.add_argument("-o", "--output", help="write the YAML here (default: stdout)")
    p.add_argument("--validate", action="store_true", help="check it against the Argo CRD schema, unknown fields rejected")
    p.add_argument("--sweep", dest="sweep_file", metavar="FILE",
                   help="compile a sweep of the notebook from this YAML file (space, metric, ...): a KubeRay RayJob")
    p.add_argument("--fanout", action="store_true", default=None,
                   help="with --sweep: a grid sweep as Argo withItems fan-out, for clusters without KubeRay")
    p.set_defaults(handler=cmd_compile)
    add_show_env_option(p)

    add_cluster_commands(sub)

    p = sub.add_parser("runs", help="recent runs and their status")
    p.add_argument("--status", help="only runs with this status")
    p.add_argument("--notebook", help="only runs of this notebook")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("status", help="one run's status, progress and links")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("logs", help="a run's log")
    p.add_argument("run_id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser("cancel", help="stop a run; its partial output is kept")
    p.add_argument("run_id")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS", help="how long to wait for the run to stop (default 60)")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("quota", help="your GPU quota and what is left (inside JupyterHub)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_quota)

    p = sub.add_parser("daemons", help="the warm sweep driver, tracking agent, trial host and Ray head of $NBSCALE_HOME; `daemons stop` ends them")
    p.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_daemons)

    p = sub.add_parser("schema", help="print the JSON Schema of the run and pipeline specs")
    p.set_defaults(handler=cmd_schema)
    return parser


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    from .executors.selection import EXECUTOR_CHOICES  # imports the cluster config's model

    add_spec_arguments(p)
    p.add_argument("--executor", choices=EXECUTOR_CHOICES, default=None,
                   help="where the run goes: local, or argo (the default inside a cluster's pod with NBSCALE_CLUSTER_CONFIG)")
    p.add_argument("--detach", action="store_true", help="start the run and return at once")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspection import inspect_notebook
    from .paths import resolve_notebook_path

    path, relative = resolve_notebook_path(args.notebook, os.getcwd())
    signature = inspect_notebook(path).with_path(relative)
    if args.json:
        render.print_json(signature.to_api())
    else:
        _console().print(render.signature_table(signature))
        if not signature.has_parameters_cell:
            _console().print(render.NO_PARAMETERS_CELL, highlight=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    with collector_paused():  # importing, building the spec and submitting are one burst; following the run is not
        executor, record = _submit_run(args)
    console = _console(stderr=args.json)
    if args.detach:
        if args.json:
            render.print_json(record.to_api())
        else:
            console.print(f"started {record.id}; follow it with `nbscale logs -f {record.id}`")
        return 0
    try:
        record = render.follow(executor, record, console)
    except KeyboardInterrupt:
        _err().print(f"interrupted: cancelling {record.id} (partial output is kept)")
        record = executor.cancel(record.id)
        render.summary(record, _err())
        return EXIT_INTERRUPTED
    record = fetch_outputs(executor, record)
    if args.json:
        render.print_json(record.to_api())
    else:
        render.summary(record, console)
    if record.status != "SUCCEEDED":
        _err().print(f"[red]error:[/] {record.id} {record.status}: {redact(record.error or 'see nbscale logs ' + record.id)}", highlight=False)
        return EXIT_FAILED
    return 0


def _submit_run(args: argparse.Namespace) -> tuple[Executor, RunRecord]:
    from .executors import get_executor
    from .executors.selection import default_executor_name
    from .submit import submit  # the compiler is imported only for commands that need it

    spec = spec_from_args(args, root=os.getcwd())
    executor = get_executor(args.executor or default_executor_name(), root=os.getcwd())
    return executor, submit(spec, executor=executor, root=os.getcwd())


def cmd_compile(args: argparse.Namespace) -> int:
    with collector_paused():  # importing the compiler and the models and building the spec: the command's burst
        return _compile(args)


def _compile(args: argparse.Namespace) -> int:
    from .compiler import compile_to_file

    if args.sweep_file and str(args.target).endswith((".yaml", ".yml")):
        raise SpecError("--sweep sweeps one notebook; give a .ipynb, not a pipeline.")
    spec = spec_from_args(args, root=os.getcwd())
    if args.sweep_file:
        from .spec import RunSpec
        from .sweep.cli_args import apply_sweep_file

        if not isinstance(spec, RunSpec):  # unreachable for a .ipynb target; keeps the type checker honest
            raise SpecError("--sweep sweeps one notebook; give a .ipynb, not a pipeline.")
        spec = apply_sweep_file(spec, args.sweep_file, root=os.getcwd())
    elif args.fanout:
        raise SpecError("--fanout applies to sweeps: add --sweep FILE.")
    text = compile_to_file(spec, Path(args.output) if args.output else None, validate=args.validate,
                           notebook_root=Path.cwd(), fanout=args.fanout)
    if args.output:
        crds = "the Argo Workflow CRD" + (" and the KubeRay RayJob CRD" if "kind: RayJob" in text else "")
        _err().print(f"wrote {args.output}" + (f" (valid against {crds})" if args.validate else ""))
    else:
        sys.stdout.write(text)
    return 0


def executor_for(run_id: str) -> Executor:
    """The executor that runs ``run_id``, as its record names it (local, argo, ...)."""
    from .executors import get_executor
    from .store import RunStore

    store = RunStore()
    return get_executor(store.get(run_id).executor, root=os.getcwd(), store=store)


def fetch_outputs(executor: Executor, record: RunRecord) -> RunRecord:
    """Make a finished run's output files local (a cluster run's come from MLflow), so the summary's paths exist."""
    from .executors.base import OUTPUT_LINKS

    if record.done:
        for name, key in OUTPUT_LINKS.items():
            if key in record.links:
                try:
                    executor.output_file(record.id, name)
                except NbscaleError as exc:
                    _err().print(f"[yellow]warning:[/] {exc.message}", highlight=False)
    return record


def cmd_runs(args: argparse.Namespace) -> int:
    from .store import RunStore

    store = RunStore()
    records, total = store.list(status=args.status, notebook=args.notebook, limit=args.limit)
    unreachable: set[str] = set()  # executors that failed once are not asked again (a cluster that is down)
    refresh = functools.partial(_refreshed, executors={}, store=store, unreachable=unreachable)
    records = [r if r.done else refresh(r) for r in records]
    if args.json:
        render.print_json({"runs": [r.to_api() for r in records], "total": total})
    else:
        _console().print(render.runs_table(records, total), soft_wrap=True)  # notebook paths stay whole
    if unreachable:
        _err().print(f"[yellow]warning:[/] could not refresh runs of the {', '.join(sorted(unreachable))} executor; "
                  "their status is the last one recorded.", highlight=False)
    return 0


def _refreshed(record: RunRecord, *, executors: dict[str, Executor], store: RunStore, unreachable: set[str]) -> RunRecord:
    """The record as its executor sees it now (one executor of each kind, on the command's store)."""
    from .executors import get_executor

    if record.executor in unreachable:
        return record
    try:
        if record.executor not in executors:
            executors[record.executor] = get_executor(record.executor, root=os.getcwd(), store=store)
        return executors[record.executor].get(record.id)
    except NbscaleError as exc:  # one unreachable cluster must not hide the other runs
        logging.getLogger(__name__).info("could not refresh %s: %s", record.id, exc.message)
        unreachable.add(record.executor)
        return record


def cmd_status(args: argparse.Namespace) -> int:
    executor = executor_for(args.run_id)
    record = fetch_outputs(executor, executor.get(args.run_id))
    if args.json:
        render.print_json(record.to_api())
    else:
        render.summary(record, _console())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    executor = executor_for(args.run_id)
    chunks = executor.stream_logs(args.run_id) if args.follow else iter([executor.logs(args.run_id, 0)[0]])
    for text in chunks:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    executor = executor_for(args.run_id)
    before = executor.get(args.run_id)
    if before.done:
        _console().print(f"{before.id}: already {before.status}, nothing to cancel")
        return 0
    record = executor.cancel(args.run_id, wait=args.wait)
    if not record.done:  # asked to stop but not stopped yet: saying KILLED now would be a guess
        _err().print(f"[red]error:[/] {record.id} is still stopping after {args.wait:g} s; its partial output is kept. "
                  f"{executor.stop_hint(record)}", highlight=False)
        return EXIT_FAILED
    _console().print(f"{record.id}: {record.status}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .spec import spec_json_schemas

    render.print_json(spec_json_schemas())
    return 0


def cmd_daemons(args: argparse.Namespace) -> int:
    from .daemons import list_daemons

    if args.action == "stop":
        return _stop_daemons(as_json=args.json)
    daemons = list_daemons()
    if args.json:
        render.print_json([{**vars(d), "pid_file": str(d.pid_file)} for d in daemons])
    else:
        _console().print(render.daemons_lines(daemons), soft_wrap=True)
    return 0


def _stop_daemons(*, as_json: bool) -> int:
    """``daemons stop``: what it waits for on stderr at once, each helper's outcome once known; 130 after Ctrl-C, 1 if one did not exit."""
    from .daemons import stop_daemons

    errors = _console(stderr=True)
    outcomes = stop_daemons(on_wait=lambda text: errors.print(text, soft_wrap=True))
    if as_json:
        render.print_json([{"name": o.name, "pid": o.pid, "state": o.state} for o in outcomes])
    else:
        _console().print(render.daemons_stop_lines(outcomes), soft_wrap=True)
    states = {o.state for o in outcomes}
    return 130 if "leaving" in states else 1 if "running" in states else 0


def cmd_quota(args: argparse.Namespace) -> int:
    from hub_extension.client import quota_status

    status = quota_status()
    if args.json:
        render.print_json(status)
    else:
        _console().print(render.quota_table(status))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nbscale`` console script."""
    # First, with os.environ as it started: what this process changes travels in the request, and a
    # password moved out of the tracking URI must not (the driver's child moves it again, from /proc).
    try:
        forwarded = sweep_in_warm_driver(sys.argv[1:] if argv is None else list(argv), build_parser)
        if forwarded is not None:
            return forwarded
        # Before MLflow is imported: it decides at import whether to start its telemetry client.
        os.environ[TELEMETRY_SWITCH] = telemetry_switch(os.environ)
        # A tracking URI's password goes to MLflow's credential variables: MLflow prints the URIs it is given.
        os.environ.update(credentials_out_of_uri(os.environ))
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        redact_logs()
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except NbscaleError as exc:
        return render.error_exit(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
