"""The run spec: the one contract the button, the magics, the CLI and the compiler all speak.

A ``RunSpec`` is one notebook with parameters and resources. A ``PipelineSpec`` is several
notebook steps with ``after:`` dependencies. Both are pydantic models, validated on the way in;
``build_run_spec`` and ``load_pipeline`` also check parameters against the notebooks themselves.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import SpecError, field_errors
from .inspection import NotebookSignature, inspect_notebook
from .limits import parameter_problems
from .params import check_parameters, parse_cli_parameters
from .paths import resolve_notebook_path
from .sweep.space import check_space
from .sweep.spec import SAVED, SweepSpec, parse_sweep

#: The single-user image, which also runs the steps; clusters override it per run or in config.
DEFAULT_IMAGE = "nbscale/singleuser:0.1.0"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
_QUANTITY = QUANTITY_PATTERN
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_QUEUE_HELP = "Kueue LocalQueue on a cluster; default: the cluster config's, else your hub quota group's"
#: What the spec's patterns mean, in the words error messages use instead of the regex.
PATTERN_WORDS = {
    _QUANTITY: "a Kubernetes quantity: a number with an optional unit, such as 4Gi, 512Mi or 2",
    _DNS_LABEL: "lowercase letters, digits and '-', starting and ending with a letter or digit, such as a100",
    r"^[^\s]+$": "one word without spaces, such as registry.example.com/team/runner:1.2",
}

M = TypeVar("M", bound=BaseModel)


def current_user() -> str:
    """Who is running: the hub user inside JupyterHub, else the login name."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What one notebook execution asks the cluster for."""

    cpu: float = Field(1.0, gt=0, le=512, description="CPU cores (for example 0.5 or 4)")
    memory: str = Field("2Gi", pattern=_QUANTITY, description="Memory as a Kubernetes quantity, e.g. 4Gi")
    gpus: int = Field(0, ge=0, le=64, description="Whole GPUs for the run")
    pool: str | None = Field(None, pattern=_DNS_LABEL, description="GPU pool name from the pool configuration, e.g. a100")


class TrackingSpec(_Strict):
    """Where the run lands in MLflow."""

    experiment: str | None = Field(None, min_length=1, max_length=250, description="MLflow experiment; default: the notebook's name")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags")

    @field_validator("tags")
    @classmethod
    def _tag_sizes(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not key or len(key) > 250:
                raise ValueError(f"tag name {key[:40]!r} must have 1 to 250 characters")
            if len(value) > 5000:
                raise ValueError(f"tag {key!r} is longer than 5000 characters")
        return tags


class OutputsSpec(_Strict):
    """What a run keeps. The executed notebook is always kept."""

    html: bool = Field(True, description="Also render the executed notebook to HTML")


class NotebookStep(_Strict):
    """Fields shared by a single run and a pipeline step."""

    notebook: str = Field(..., description="Notebook path, relative to the working directory")
    parameters: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    timeout_seconds: int | None = Field(None, gt=0, le=7 * 24 * 3600, description="Stop the run after this many seconds")
    retries: int = Field(0, ge=0, le=10, description="Retries after a failure")
    image: str | None = Field(None, min_length=1, max_length=512, pattern=r"^[^\s]+$", description="Container image; default: the single-user image")

    @field_validator("notebook")
    @classmethod
    def _relative_notebook(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError("must be a relative path inside the working directory, without '..'")
        if path.suffix != ".ipynb":
            raise ValueError("must be a .ipynb notebook")
        return str(path)

    @field_validator("parameters")
    @classmethod
    def _bounded_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = parameter_problems(value)  # before anything else looks at each of 100,000 names
        if problem:
            raise PydanticCustomError("too_large", problem)
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise PydanticCustomError("parameter_name", "parameter names must be Python identifiers: {names}",
                                      {"names": ", ".join(repr(name[:40]) for name in bad[:5])})
        return value


class RunSpec(NotebookStep):
    """One notebook, run once with these parameters."""

    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    user: str = Field(default_factory=current_user, min_length=1, max_length=256)
    sweep: SweepSpec | None = Field(None, description="Sweep these parameters instead of running once (see workflow_compiler/sweep)")
    queue: str | None = Field(None, pattern=_DNS_LABEL, description=_QUEUE_HELP)

    @property
    def experiment(self) -> str:
        """The MLflow experiment: as given, else the notebook's name."""
        return self.tracking.experiment or PurePosixPath(self.notebook).stem


class PipelineStep(NotebookStep):
    """One notebook of a pipeline, run after the steps it names."""

    name: str = Field(..., pattern=_DNS_LABEL, description="Step name: lowercase letters, digits and '-'")
    after: list[str] = Field(default_factory=list, description="Steps that must finish first")


class PipelineSpec(_Strict):
    """Several notebooks in dependency order, tracked under one parent MLflow run."""

    name: str = Field(..., pattern=_DNS_LABEL)
    steps: list[PipelineStep] = Field(..., min_length=1)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    user: str = Field(default_factory=current_user, min_length=1, max_length=256)
    queue: str | None = Field(None, pattern=_DNS_LABEL, description=_QUEUE_HELP)

    @model_validator(mode="after")
    def _check_graph(self) -> PipelineSpec:
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"step names must be unique; repeated: {', '.join(dupes)}")
        for step in self.steps:
            unknown = [a for a in step.after if a not in names]
            if unknown:
                raise ValueError(f"step {step.name!r} runs after unknown step(s) {', '.join(map(repr, unknown))}; steps are: {', '.join(names)}")
        self.order()  # raises on a cycle
        return self

    @property
    def experiment(self) -> str:
        """The MLflow experiment: as given, else the pipeline's name."""
        return self.tracking.experiment or self.name

    def order(self) -> list[PipelineStep]:
        """Steps in a dependency order (Kahn's algorithm, stable in declaration order)."""
        by_name = {s.name: s for s in self.steps}
        indegree = {s.name: len(set(s.after)) for s in self.steps}
        ready = [s.name for s in self.steps if indegree[s.name] == 0]
        ordered: list[PipelineStep] = []
        while ready:
            name = ready.pop(0)
            ordered.append(by_name[name])
            for step in self.steps:
                if name in step.after:
                    indegree[step.name] -= 1
                    if indegree[step.name] == 0:
                        ready.append(step.name)
        if len(ordered) != len(self.steps):
            stuck = [s.name for s in self.steps if s not in ordered]
            raise ValueError(f"the steps {', '.join(stuck)} form a cycle through their 'after' lists")
        return ordered


def parse_model(model: type[M], data: Any, *, what: str) -> M:
    """Validate ``data`` as ``model``; a pydantic error becomes a SpecError listing each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors, lines = field_errors(exc, patterns=PATTERN_WORDS)
        raise SpecError(f"invalid {what}: {lines}", errors=errors) from None


def saved_run_spec(data: Any) -> RunSpec:
    """A RunSpec that nbscale saved itself (a sweep's state): the checks added since it was saved,
    which refuse what it then accepted, are not applied, so ``--resume`` finishes it as it began."""
    return RunSpec.model_validate(data, context=SAVED)


def build_run_spec(
    notebook: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] = ".",
    cli_parameters: Iterable[str] = (),
    parameters: Mapping[str, Any] | None = None,
    **fields: Any,
) -> RunSpec:
    """Build a checked RunSpec from what a user typed: a notebook path and NAME=VALUE parameters."""
    absolute, relative = resolve_notebook_path(notebook, root)
    signature = relative_signature(absolute, relative)
    values = parse_cli_parameters(cli_parameters, signature)
    values.update(check_parameters(parameters or {}, signature))
    return parse_model(RunSpec, {"notebook": relative, "parameters": values, **fields}, what="run spec")


def relative_signature(absolute: Path, relative: str) -> NotebookSignature:
    """The notebook's signature under its root-relative path, so messages never show the root."""
    return inspect_notebook(absolute).with_path(relative)


def check_run_spec(spec: RunSpec, *, root: str | os.PathLike[str]) -> RunSpec:
    """Check a RunSpec that arrived whole (REST body, file) against its notebook."""
    absolute, relative = resolve_notebook_path(spec.notebook, root)
    signature = relative_signature(absolute, relative)
    values = check_parameters(spec.parameters, signature)
    return check_sweep(spec.model_copy(update={"notebook": relative, "parameters": values}), signature)


def check_sweep(spec: RunSpec, signature: NotebookSignature) -> RunSpec:
    """Check ``spec.sweep`` against the notebook; return the spec with normalised domains."""
    if spec.sweep is None:
        return spec
    space = check_space(spec.sweep.space, signature, fixed=spec.parameters)
    # validated again: values typed by the notebook may coincide (1 and 1.0 for a float), which changes what samples may be
    return spec.model_copy(update={"sweep": parse_sweep({**spec.sweep.model_dump(exclude={"space"}), "space": space})})


def load_pipeline(path: str | os.PathLike[str], *, root: str | os.PathLike[str] = ".") -> PipelineSpec:
    """Load a pipeline YAML; notebook paths in it are relative to the YAML file's folder."""
    file, _ = resolve_notebook_path_any(path, root)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a mapping with 'name' and 'steps', not {type(data).__name__}.")
    data.setdefault("name", _dns_name(file.stem))
    for step in data.get("steps") or []:
        if isinstance(step, dict) and isinstance(step.get("notebook"), str):
            _, step["notebook"] = resolve_notebook_path(file.parent / step["notebook"], root)
    spec = parse_model(PipelineSpec, data, what=f"pipeline {path}")
    return check_pipeline(spec, root=root)


def check_pipeline(spec: PipelineSpec, *, root: str | os.PathLike[str]) -> PipelineSpec:
    """Check every step's parameters against its notebook."""
    steps = []
    for step in spec.steps:
        absolute, relative = resolve_notebook_path(step.notebook, root)
        try:
            values = check_parameters(step.parameters, relative_signature(absolute, relative))
        except SpecError as exc:
            raise SpecError(f"step {step.name!r}: {exc.message}",
                            errors=[{**e, "loc": ["steps", step.name, *e["loc"]]} for e in exc.errors]) from None
        steps.append(step.model_copy(update={"notebook": relative, "parameters": values}))
    return spec.model_copy(update={"steps": steps})


def resolve_notebook_path_any(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> tuple[Path, str]:
    """Like ``resolve_notebook_path`` but for any file (a pipeline YAML), with a clear 'missing' error."""
    absolute, relative = resolve_notebook_path(path, root)
    if not absolute.is_file():
        raise SpecError(f"{path}: no such file.")
    return absolute, relative


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "pipeline"


def spec_json_schemas() -> dict[str, Any]:
    """JSON Schemas of the run and pipeline specs, for the front end's forms."""
    return {"run": RunSpec.model_json_schema(), "pipeline": PipelineSpec.model_json_schema()}
