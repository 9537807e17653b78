"""papermill's Python translator, reading a parameters cell with nbscale's own inspection.

papermill finds a notebook's parameters with a regular expression whose annotation part allows
no ``|``, so ``limit: int | None = None`` is not a parameter to it and it warns "Passed unknown
parameter: limit" although the value is injected and applied. Our inspection (``ast``) already
reads every assignment the CLI and the REST API accept; papermill gets the same list from it.
Translating values into code stays papermill's own.
"""

from __future__ import annotations

import logging
from typing import Any

from papermill.models import Parameter  # type: ignore[import-untyped]
from papermill.translators import PythonTranslator, papermill_translators  # type: ignore[import-untyped]

from ..errors import NotebookError
from ..inspection import parse_parameters_source

log = logging.getLogger(__name__)


class InspectedPythonTranslator(PythonTranslator):  # type: ignore[misc]
    """``PythonTranslator`` whose ``inspect`` is ``inspection.parse_parameters_source``."""

    @classmethod
    def inspect(cls, parameters_cell: Any) -> list[Any]:
        """The cell's parameters as papermill's ``Parameter`` tuples; [] when the cell does not parse."""
        try:
            found = parse_parameters_source(parameters_cell.source)
        except NotebookError as exc:  # papermill's contract: ignore inspection errors
            log.debug("parameters cell not inspected: %s", exc)
            return []
        return [Parameter(name=p.name, inferred_type_name=p.type + (" | None" if p.nullable else ""),
                          default=p.default_source, help=p.help) for p in found]


def register_translator() -> None:
    """Make papermill read Python parameters cells with our inspection (idempotent)."""
    papermill_translators.register("python", InspectedPythonTranslator)
