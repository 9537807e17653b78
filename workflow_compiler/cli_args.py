"""The command-line grammar of a run, shared by the ``nbscale`` CLI and the ``%nbscale`` magics.

One parser, so ``-p``, ``--gpus`` and friends mean the same everywhere.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SpecError

if TYPE_CHECKING:  # the spec models import pydantic, yaml and nbformat: only commands that build a spec pay
    from .spec import PipelineSpec, RunSpec


class ArgumentError(SpecError):
    """The command line itself is malformed (argparse's complaint, as an NbscaleError)."""


class ThrowingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so magics and tests can catch errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ArgumentError(f"{self.prog}: {message}")

    def defer_arguments(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``add(self)`` only when this (sub)command is parsed or its help shown.

        Some commands' arguments come from modules that import pydantic models or more; deferring
        them keeps ``nbscale --help`` and the light commands from importing what they never use.
        """
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:  # type: ignore[override]
        """argparse's parse, after adding any deferred arguments (subcommands are parsed through here too)."""
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        """argparse's help, with any deferred arguments."""
        self._add_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        """argparse's usage line, with any deferred arguments."""
        self._add_deferred()
        return super().format_usage()


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments that build a RunSpec or PipelineSpec: target, parameters, resources, tracking."""
    parser.add_argument("target", metavar="NOTEBOOK_OR_PIPELINE", help="a notebook (.ipynb) or a pipeline (.yaml)")
    parser.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], metavar="NAME=VALUE",
                        help="set a notebook parameter; repeat for more (typed by the notebook's parameters cell)")
    group = parser.add_argument_group("resources")
    group.add_argument("--cpu", type=float, help="CPU cores per run (default 1)")
    group.add_argument("--memory", help="memory per run, e.g. 4Gi (default 2Gi)")
    group.add_argument("--gpus", type=int, help="whole GPUs per run (default 0)")
    group.add_argument("--pool", help="GPU pool from the pool configuration, e.g. a100")
    group.add_argument("--timeout", type=int, dest="timeout_seconds", metavar="SECONDS", help="stop the run after this long")
    group.add_argument("--retries", type=int, help="retries after a failure (default 0)")
    group.add_argument("--image", help="container image for the cluster (default: the nbscale single-user image)")
    track = parser.add_argument_group("tracking")
    track.add_argument("--experiment", help="MLflow experiment (default: the notebook's or pipeline's name)")
    track.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE", help="extra MLflow tag; repeatable")
    track.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML rendering of the output notebook")


def spec_from_args(args: argparse.Namespace, *, root: str | os.PathLike[str] = ".") -> RunSpec | PipelineSpec:
    """Build the spec the parsed arguments describe, checked against the notebook(s)."""
    from .spec import build_run_spec, load_pipeline

    tags = dict(_pair(t, "--tag") for t in args.tags)
    resources = {k: v for k, v in {"cpu": args.cpu, "memory": args.memory, "gpus": args.gpus, "pool": args.pool}.items() if v is not None}
    if str(args.target).endswith((".yaml", ".yml")):
        pipeline = load_pipeline(args.target, root=root)
        if args.parameters:
            raise SpecError("-p sets a notebook's parameters; for a pipeline, set them per step in the YAML file.")
        return _apply_pipeline_overrides(pipeline, args, tags, resources)
    fields: dict[str, Any] = {"tracking": {"experiment": args.experiment, "tags": tags}, "outputs": {"html": args.html}}
    if resources:
        fields["resources"] = resources
    for name in ("timeout_seconds", "retries", "image"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    if not str(args.target).endswith(".ipynb") and Path(args.target).suffix:
        raise SpecError(f"{args.target} is neither a notebook (.ipynb) nor a pipeline (.yaml).")
    return build_run_spec(args.target, root=root, cli_parameters=args.parameters, **fields)


def _apply_pipeline_overrides(pipeline: PipelineSpec, args: argparse.Namespace, tags: dict[str, str], resources: dict[str, Any]) -> PipelineSpec:
    tracking = pipeline.tracking.model_copy(update={"tags": {**pipeline.tracking.tags, **tags},
                                                    **({"experiment": args.experiment} if args.experiment else {})})
    steps = []
    for step in pipeline.steps:
        update: dict[str, Any] = {}
        if resources:
            update["resources"] = step.resources.model_copy(update=resources)
        for name in ("timeout_seconds", "retries", "image"):
            if getattr(args, name, None) is not None:
                update[name] = getattr(args, name)
        steps.append(step.model_copy(update=update))
    outputs = pipeline.outputs.model_copy(update={"html": args.html and pipeline.outputs.html})
    return pipeline.model_copy(update={"tracking": tracking, "steps": steps, "outputs": outputs})


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"{flag} {text!r} is not KEY=VALUE.")
    return key.strip(), value
