"""``python -m workflow_compiler.sweep``: the sweep driver as a command (also the RayJob entrypoint).

Takes the ``nbscale sweep`` arguments, or ``--spec-json`` with a whole RunSpec (as the compiled
RayJob passes it). Exit code 0 when the sweep succeeded, 1 when no trial did, 130 when cancelled.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import NbscaleError
from ..spec import RunSpec, parse_model
from .cli_args import add_sweep_arguments, sweep_from_args

EXIT = {"SUCCEEDED": 0, "FAILED": 1, "KILLED": 130}


def main(argv: list[str] | None = None) -> int:
    """Run or resume one sweep and print its summary."""
    parser = argparse.ArgumentParser(prog="python -m workflow_compiler.sweep", description=__doc__)
    add_sweep_arguments(parser)
    parser.add_argument("--spec-json", help="the whole RunSpec (with 'sweep') as JSON, instead of the flags")
    parser.add_argument("--root", default=".", help="folder notebook paths are relative to (default: here)")
    parser.add_argument("--sweep-id", help="use this id for a new sweep (default: a new nbs-… id)")
    args = parser.parse_args(argv)
    from .driver import run_sweep
    from .progress import print_result

    try:
        if args.resume:
            result = run_sweep(None, root=args.root, progress=args.progress, resume_id=args.resume)
        else:
            spec = parse_model(RunSpec, json.loads(args.spec_json), what="sweep") if args.spec_json else sweep_from_args(args, args.root)
            result = run_sweep(spec, root=args.root, progress=args.progress, sweep_id=args.sweep_id)
    except NbscaleError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_summary()))
    else:
        print_result(result)
    return EXIT[result.status]


if __name__ == "__main__":
    sys.exit(main())
