"""``python -m workflow_compiler.sweep``: the sweep driver as a command (also the RayJob entrypoint).

Takes the ``nbscale sweep`` arguments, or ``--spec-json`` with a whole RunSpec, or ``--spec-env
NAME`` naming an environment variable that holds it (the compiled RayJob's way: its entrypoint
stays a constant command line and the spec travels in ``runtimeEnvYAML``). Exit code 0 when the sweep succeeded, 1 when no trial did, 130 when cancelled.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import NbscaleError, SpecError

if TYPE_CHECKING:
    from ..spec import RunSpec

# The spec's models and the sweep grammar are imported where used, not here: with a warm driver this
# process is its thin client (~0.1 s of CPU instead of ~0.2 s), and the driver's child has them already.

EXIT = {"SUCCEEDED": 0, "FAILED": 1, "KILLED": 130}


def main(argv: list[str] | None = None) -> int:
    """Run or resume one sweep and print its summary (in a child of the warm sweep driver when there is one)."""
    from .warm_driver import run_in_driver

    argv = sys.argv[1:] if argv is None else list(argv)
    forwarded = run_in_driver("sweep", argv, precheck=functools.partial(_refusal, argv))
    if forwarded is not None:
        return forwarded
    args = _parser().parse_args(argv)
    from .driver import run_sweep
    from .progress import print_result
    from .results import failure_line

    try:
        if args.resume:
            result = run_sweep(None, root=args.root, progress=args.progress, resume_id=args.resume)
        else:
            result = run_sweep(_spec(args), root=args.root, progress=args.progress, sweep_id=args.sweep_id)
    except NbscaleError as exc:
        return _refuse(exc)
    if args.json:
        print(json.dumps(result.to_summary()))
    else:
        print_result(result)
    failure = failure_line(result)
    if failure:  # the job's log (a RayJob's, the local executor's) says why, not only its exit code
        print(failure, file=sys.stderr)
    return EXIT[result.status]


def _parser() -> argparse.ArgumentParser:
    from .cli_args import add_sweep_arguments

    parser = argparse.ArgumentParser(prog="python -m workflow_compiler.sweep", description=__doc__)
    add_sweep_arguments(parser)
    parser.add_argument("--spec-json", help="the whole RunSpec (with 'sweep') as JSON, instead of the flags")
    parser.add_argument("--spec-env", metavar="NAME", help="read the RunSpec JSON from this environment variable")
    parser.add_argument("--root", default=".", help="folder notebook paths are relative to (default: here)")
    parser.add_argument("--sweep-id", default=os.environ.get("NBSCALE_SWEEP_ID") or None,
                        help="use this id for a new sweep (default: $NBSCALE_SWEEP_ID, set by the local executor to the run id, else a new id)")
    return parser


def _spec(args: argparse.Namespace) -> RunSpec:
    from ..spec import RunSpec, parse_model
    from .cli_args import sweep_from_args

    text = _spec_text(args)
    return parse_model(RunSpec, _json(text), what="sweep") if text is not None else sweep_from_args(args, args.root)


def _refusal(argv: list[str]) -> Callable[[], int] | None:
    """While a cold sweep driver starts: how this command refuses ``argv`` (None: it does not), by its own parse and
    spec building, so that a usage error need not wait for the driver (``cold_check.py``)."""
    from .cold_check import refusal

    args = _parser().parse_args(argv)  # argparse's own errors and --help exit here, as in the child
    return refusal(lambda: None if args.resume else _spec(args), _refuse)


def _refuse(exc: NbscaleError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    return 2


def _spec_text(args: argparse.Namespace) -> str | None:
    if args.spec_env is None:
        return args.spec_json
    if args.spec_env not in os.environ:
        raise SpecError(f"--spec-env {args.spec_env}: no such environment variable (the RayJob's runtimeEnvYAML sets it).")
    return os.environ[args.spec_env]


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SpecError(f"the sweep spec is not valid JSON: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
