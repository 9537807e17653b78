"""``nbscale-step``: the command every compiled step runs (``python -m workflow_compiler.runtime``).

    nbscale-step run --config JSON --output-dir DIR [--parameter NAME=JSON ...] [--parameters-file FILE] [--parent-run-id ID]
    nbscale-step open-parent --config JSON --output-dir DIR
    nbscale-step close-parent --run-id ID --workflow-status Succeeded|Failed|Error

Exit codes: 0 success, 1 failed notebook (or MLflow unusable), 2 bad invocation (config, notebook
path, parameters), 130/143 interrupted/terminated (the run is KILLED).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from .speedups import exit_now, skip_slow_optional_imports

log = logging.getLogger("workflow_compiler.runtime")

#: MLflow run ids are 32 hex digits; anything of this shape is safe in a search filter.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``nbscale-step``."""
    parser = argparse.ArgumentParser(prog="nbscale-step", description="Run one step of an nbscale workflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute a notebook and record it in MLflow")
    run.add_argument("--config", required=True, help="StepConfig JSON (StepConfig.to_arg())")
    run.add_argument("--output-dir", required=True, type=Path, help="where output.ipynb, output.html, progress.json and result.json go")
    run.add_argument("--parameter", action="append", default=[], metavar="NAME=JSON", help="a notebook parameter, JSON-encoded; repeatable")
    run.add_argument("--parameters-file", type=Path, default=None, metavar="FILE",
                     help="a JSON list of NAME=JSON texts, as --parameter takes them: values kept off the command line")
    run.add_argument("--parent-run-id", default=None, help="MLflow run to nest this run under (pipelines)")
    opened = sub.add_parser("open-parent", help="create a pipeline's parent MLflow run; prints its id and writes DIR/run-id")
    opened.add_argument("--config", required=True)
    opened.add_argument("--output-dir", required=True, type=Path)
    close = sub.add_parser("close-parent", help="end a pipeline's parent MLflow run with the workflow's status")
    close.add_argument("--run-id", required=True)
    close.add_argument("--workflow-status", required=True, choices=["Succeeded", "Failed", "Error"])
    return parser


def _fail(message: str, code: int) -> int:
    from ..redaction import redact

    print(f"nbscale-step: error: {redact(' '.join(message.split()))}", file=sys.stderr)
    return code


def _config(text: str):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from ..stepconfig import StepConfig

    try:
        return StepConfig.from_arg(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ValueError(f"--config is not a valid step config: {where}: {first['msg']}") from None


def _run(args: argparse.Namespace) -> int:
    from ..errors import SpecError
    from ..tracking.step_tracker import TrackerProcess
    from ..tracking_uri import tracking_uri
    from .parameters import decode_parameters, read_parameters_file

    if args.parent_run_id is not None and not _RUN_ID.match(args.parent_run_id):
        return _fail(f"--parent-run-id {args.parent_run_id[:80]!r} is not an MLflow run id.", 2)
    tracker = TrackerProcess(tracking_uri())  # before the step's own imports: a cold step's longest chain is its `import mlflow`
    try:
        config = _config(args.config)
        items = [*args.parameter, *(read_parameters_file(args.parameters_file) if args.parameters_file else [])]
        parameters = decode_parameters(items)
    except (ValueError, SpecError) as exc:
        tracker.close()  # never asked to open a run: stopped at once
        return _fail(str(exc), 2)
    from .step import StepRequest, StepRunner

    request = StepRequest(config, args.output_dir.resolve(), parameters, args.parent_run_id)
    result = StepRunner(request, Path.cwd(), tracker=tracker).run()
    outcome = result.outcome
    if outcome.status != "SUCCEEDED":
        return _fail(f"{outcome.status}: {outcome.reason}", outcome.exit_code)
    log.info("SUCCEEDED: MLflow run %s, outputs in %s", result.mlflow_run_id, args.output_dir)
    return 0


def _open_parent(args: argparse.Namespace) -> int:
    from .parent import open_parent

    try:
        config = _config(args.config)
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        run_id = open_parent(config, args.output_dir)
    except Exception as exc:  # noqa: BLE001 - MLflow unreachable or refusing: say so on one line
        return _fail(f"could not open the parent MLflow run: {type(exc).__name__}: {exc}", 1)
    print(run_id)
    return 0


def _close_parent(args: argparse.Namespace) -> int:
    from .parent import close_parent

    run_id = args.run_id.strip()
    if not run_id or run_id.startswith("{{"):
        log.warning("no parent run to close (the run-id is %r: the pipeline never opened one)", args.run_id)
        return 0
    if not _RUN_ID.match(run_id):
        return _fail(f"--run-id {run_id[:80]!r} is not an MLflow run id.", 2)
    try:
        close_parent(run_id, args.workflow_status)
    except Exception as exc:  # noqa: BLE001 - any MLflow failure becomes the one-line error
        return _fail(f"could not close parent MLflow run {run_id}: {type(exc).__name__}: {exc}", 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nbscale-step``; returns the exit code.

    Called without ``argv`` (as the process's entry point), it ends the process itself once the
    step's outcome is written (``speedups.exit_now``: no module teardown, a step's last 0.2 s).
    """
    skip_slow_optional_imports()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s nbscale-step %(levelname)s %(message)s", stream=sys.stderr)
    from ..redaction import redact_logs

    redact_logs()
    handlers = {"run": _run, "open-parent": _open_parent, "close-parent": _close_parent}
    code = handlers[args.command](args)
    if argv is None:
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
