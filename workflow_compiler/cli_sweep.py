"""``nbscale sweep``: its command, its arguments, and how the command goes whole to the warm sweep driver.

Kept apart from ``cli.py`` so that it takes two lines there: ``add_sweep_command(sub)`` and, first in
``main``, ``sweep_in_warm_driver(argv, build_parser)``. Like every command it imports what it uses when
it runs: the sweep's spec models, nbformat, Ray and MLflow never load for other commands.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from typing import Any

from . import cli_render as render
from .cli_render import EXIT_FAILED, EXIT_INTERRUPTED, err
from .errors import RunNotFound, SpecError


def add_sweep_command(sub: Any) -> None:
    """``nbscale sweep ...``: its arguments are added only when the command is the one parsed."""
    p = sub.add_parser("sweep", help="sweep a notebook's hyperparameters on Ray Tune (local Ray by default)")
    p.defer_arguments(_add_sweep_arguments)
    p.set_defaults(handler=cmd_sweep)


def _add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    from .sweep.cli_args import add_sweep_arguments  # imports the spec models and nbformat

    add_sweep_arguments(p)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep (or resume one) here, under its quota lease and its run record; its exit code."""
    from . import quota
    from .executors import new_run_id
    from .private_files import private_umask
    from .store import nbscale_home
    from .sweep.cli_args import sweep_from_args
    from .sweep.driver import run_sweep
    from .sweep.progress import print_result
    from .sweep_record import recorded_sweep

    show = args.progress and not args.json
    nbscale_home()  # a home that is not private is refused before the sweep writes anything there
    if args.resume:
        ensure_sweep_record(args.resume)
        with recorded_sweep(None, run_id=args.resume), private_umask():  # the sweep's files are the user's alone
            result = run_sweep(None, root=os.getcwd(), progress=show, resume_id=args.resume)
    else:
        spec = sweep_from_args(args, os.getcwd())
        run_id = new_run_id()  # also the driver's sweep id, as when the local executor drives it
        request = quota.lease_request(spec) or {}
        gpus = int(request.get("gpus", 0))
        lease_id = quota.admit(spec, request_id=run_id)  # refused or unreachable: nothing starts
        with quota.hold_lease(lease_id, gpus=gpus), recorded_sweep(spec, run_id=run_id, lease_id=lease_id, lease_gpus=gpus), \
                private_umask():  # the sweep's folder, its Ray workers' outputs and MLflow's store are the user's alone
            result = run_sweep(spec, root=os.getcwd(), progress=show, sweep_id=run_id)
    if args.json:
        render.print_json(result.to_summary())
    else:
        print_result(result)
    if result.status == "KILLED":
        err().print(f"interrupted: finish it with `nbscale sweep --resume {result.sweep_id}` (completed trials are kept)", highlight=False)
        return EXIT_INTERRUPTED
    return 0 if result.status == "SUCCEEDED" else EXIT_FAILED


def ensure_sweep_record(sweep_id: str) -> None:
    """A sweep started before sweeps were recorded gets its record on resume, from its saved spec."""
    from .spec import saved_run_spec
    from .store import RunStore
    from .submit import record_for
    from .sweep.driver import sweeps_dir
    from .sweep_record import read_json

    store = RunStore()
    if not sweep_id.replace("-", "").isalnum():
        return  # run_sweep refuses it with its own message
    try:
        kind = store.get(sweep_id).kind
        if kind != "sweep":
            raise SpecError(f"{sweep_id} is a {kind}, not a sweep: --resume takes a sweep's id (`nbscale runs` lists them, "
                            f"kind sweep). To run the {kind} again, start it anew with `nbscale run`.")
    except RunNotFound:
        state = read_json(sweeps_dir() / sweep_id / "sweep.json")
        if state.get("spec"):  # else run_sweep says there is no such sweep
            store.create(record_for(saved_run_spec(state["spec"]), run_id=sweep_id))


def sweep_in_warm_driver(argv: list[str], build_parser: Callable[[], argparse.ArgumentParser]) -> int | None:
    """``nbscale sweep ...`` run whole by the warm sweep driver (``sweep/warm_driver.py``); None: run here."""
    command = next((word for word in argv if not word.startswith("-")), None)
    if command != "sweep":
        return None
    from .sweep.warm_driver import run_in_driver

    return run_in_driver("cli", argv, precheck=functools.partial(_sweep_refusal, argv, build_parser))


def _sweep_refusal(argv: list[str], build_parser: Callable[[], argparse.ArgumentParser]) -> Callable[[], int] | None:
    """While a cold sweep driver starts: how the command refuses ``argv`` (None: it does not), by ``cmd_sweep``'s own
    parse and spec building, so that a usage error need not wait for the driver (``sweep/cold_check.py``)."""
    from .sweep.cold_check import refusal

    def check() -> None:
        args = build_parser().parse_args(argv)
        if args.handler is cmd_sweep and not args.resume:
            from .sweep.cli_args import sweep_from_args

            sweep_from_args(args, os.getcwd())
    return refusal(check, render.error_exit)
