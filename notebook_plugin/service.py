"""What the REST API does, without HTTP: inspect, submit, list, follow and cancel runs.

Handlers stay thin and call this; it speaks only workflow_compiler's models and errors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from workflow_compiler.errors import NbscaleError, NotebookError, RunNotFound, SpecError
from workflow_compiler.executors.base import Executor
from workflow_compiler.inspection import NotebookSignature, inspect_notebook
from workflow_compiler.spec import (
    RunSpec,
    check_run_spec,
    current_user,
    parse_model,
    spec_json_schemas,
)
from workflow_compiler.store import TERMINAL, RunRecord
from workflow_compiler.submit import submit

from .paths import check_api_path, resolve_api_notebook

log = logging.getLogger(__name__)

#: Files a run exposes under ``runs/{id}/outputs/{name}``: name -> (record link key, content type).
OUTPUTS = {
    "output.ipynb": ("output_notebook", "application/x-ipynb+json"),
    "output.html": ("html", "text/html; charset=utf-8"),
}
#: The longest a ``logs`` long-poll waits for new text, in seconds.
MAX_LOG_WAIT = 30.0
#: The last page ``GET runs`` accepts (pages past the end are empty; far past SQLite's integers, a 400).
MAX_PAGE = 10**9
#: The largest log offset: the largest integer a browser's JSON numbers hold exactly.
MAX_LOG_OFFSET = 2**53 - 1
#: Fields of a run record left out of ``GET runs`` answers (``GET runs/{id}`` has them): the list stays light.
LIST_OMITS = ("parameters",)


class RunQuery(BaseModel):
    """The query of ``GET runs``."""

    notebook: str | None = Field(None, min_length=1)
    status: str | None = Field(None, pattern="^(PENDING|RUNNING|SUCCEEDED|FAILED|KILLED)$")
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(20, ge=1, le=200)


class LogQuery(BaseModel):
    """The query of ``GET runs/{id}/logs``."""

    offset: int = Field(0, ge=0, le=MAX_LOG_OFFSET)
    wait: float = Field(0.0, ge=0, le=MAX_LOG_WAIT)


class RunService:
    """The REST API's behaviour over one executor (which owns the run store) and one root folder."""

    def __init__(self, executor: Executor, root: str | os.PathLike[str], api_url: str) -> None:
        self.executor = executor
        self.root = Path(root).resolve()
        self.api_url = api_url.rstrip("/") + "/"

    # notebooks and schema ----------------------------------------------------------------------

    def parameters(self, path: Any) -> dict[str, Any]:
        """The notebook's parameters, typed, with defaults and help."""
        absolute, relative = resolve_api_notebook(path, self.root, field="path")
        signature = inspect_relative(absolute, relative, field="path")
        params = [p.to_api() for p in signature.parameters]
        return {"path": relative, "parameters": params, "has_parameters_cell": signature.has_parameters_cell}

    def schema(self) -> dict[str, Any]:
        """JSON Schemas of the specs (the run schema includes the optional sweep)."""
        return spec_json_schemas()

    # runs --------------------------------------------------------------------------------------

    def submit(self, body: Any, *, user: str) -> dict[str, Any]:
        """Validate a RunSpec body against its notebook, admit it against quota, and start it."""
        if not isinstance(body, dict):
            raise SpecError("the body must be a JSON object: a RunSpec such as "
                            '{"notebook": "train.ipynb", "parameters": {"n_estimators": 300}}.')
        check_api_path(body.get("notebook"), field="notebook")
        # Runs belong to the server's owner (the hub user in a single-user server), never to a body field.
        spec = parse_model(RunSpec, {**body, "user": current_user()}, what="run spec")
        absolute, relative = resolve_api_notebook(spec.notebook, self.root, field="notebook")
        inspect_relative(absolute, relative, field="notebook")  # a missing or broken notebook names the field
        spec = check_run_spec(spec, root=self.root)
        record = submit(spec, executor=self.executor, root=self.root)  # admits against the GPU quota inside a hub
        log.info("nbscale: %s submitted %s (%s) as %s", user, record.id, spec.notebook, spec.user)
        return self.to_api(record)

    def list(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of runs, newest first, filtered by notebook and status."""
        q = parse_model(RunQuery, query, what="query")
        records, total = self.executor.store.list(notebook=q.notebook, status=q.status, limit=q.per_page,
                                                  offset=(q.page - 1) * q.per_page)
        runs = [self.to_api(self._refreshed(r), omit=LIST_OMITS) for r in records]
        return {"runs": runs, "total": total, "page": q.page, "per_page": q.per_page}

    def get(self, run_id: str) -> dict[str, Any]:
        """One run, with a fresh status."""
        return self.to_api(self.executor.for_run(run_id).get(run_id))

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Stop a run; an already finished run is answered as it is."""
        return self.to_api(self.executor.for_run(run_id).cancel(run_id, wait=5.0))

    def logs_once(self, run_id: str, offset: int) -> tuple[str, int, bool]:
        """Log text from ``offset``, the next offset, and whether the run is over (and read to the end)."""
        executor = self.executor.for_run(run_id)
        done = executor.get(run_id).done
        text, next_offset = executor.logs(run_id, offset)
        return text, next_offset, done and not text

    def output_file(self, run_id: str, name: str) -> tuple[Path, str]:
        """The path and content type of one of a run's output files (404 when absent).

        A cluster run's files come from its MLflow run, downloaded into its run folder on first request.
        """
        if name not in OUTPUTS:
            raise RunNotFound(f"runs have no output {name!r}; outputs are {', '.join(OUTPUTS)}.")
        return self.executor.for_run(run_id).output_file(run_id, name), OUTPUTS[name][1]

    # helpers -----------------------------------------------------------------------------------

    def _refreshed(self, record: RunRecord) -> RunRecord:
        if record.status in TERMINAL:
            return record
        try:
            return self.executor.for_run(record.id).get(record.id)  # notices a worker that died (lost)
        except NbscaleError:
            return record

    def to_api(self, record: RunRecord, *, omit: tuple[str, ...] = ()) -> dict[str, Any]:
        """The record as the API shows it: file links become API URLs, no server paths leak, ``omit`` left out."""
        data = record.to_api()
        for field in omit:
            data.pop(field, None)
        links = {k: v for k, v in record.links.items() if k not in ("output_notebook", "html")}
        for name, (key, _) in OUTPUTS.items():
            if key in record.links:
                links[key] = f"{self.api_url}runs/{record.id}/outputs/{name}"
        data["links"] = links
        for private in ("run_dir", "pid"):
            data.pop(private, None)
        for step in data.get("steps", []):
            step.pop("output_dir", None)
        return data



def inspect_relative(absolute: Path, relative: str, *, field: str) -> NotebookSignature:
    """Inspect a notebook; errors name the request's field and show the root-relative path only."""
    try:
        return inspect_notebook(absolute)
    except NotebookError as exc:
        exc.message = exc.message.replace(str(absolute), relative)
        exc.args = (exc.message,)
        exc.errors = exc.errors or [{"loc": [field], "msg": exc.message}]
        raise
