"""How a notebook execution ended: SUCCEEDED, FAILED or KILLED, with a one-line reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..redaction import redact

Status = Literal["SUCCEEDED", "FAILED", "KILLED"]
MLFLOW_STATUS: dict[str, str] = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED"}


def one_line(text: object, limit: int = 300) -> str:
    """``text`` squeezed onto one line of at most ``limit`` characters, without credentials (every reason passes here)."""
    flat = redact(" ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class StepOutcome:
    """The end of one step: status, reason and, for a cell error, where it happened."""

    status: Status
    reason: str | None = None
    cell_index: int | None = None
    execution_count: int | None = None
    ename: str | None = None
    evalue: str | None = None
    exit_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mlflow_status(self) -> str:
        """The MLflow run status for this outcome."""
        return MLFLOW_STATUS[self.status]

    def error_detail(self) -> dict[str, Any] | None:
        """Where a cell failed, for result.json; None when no cell is to blame."""
        if self.cell_index is None and self.ename is None:
            return None
        return {"cell_index": self.cell_index, "execution_count": self.execution_count, "ename": self.ename,
                "evalue": self.evalue}

    def tags(self) -> dict[str, str]:
        """MLflow tags describing the outcome."""
        tags: dict[str, str] = {"nbscale.status": self.status}
        if self.reason:
            tags["nbscale.error"] = self.reason[:5000]
        if self.cell_index is not None:
            tags["nbscale.error.cell_index"] = str(self.cell_index)
        if self.execution_count is not None:
            tags["nbscale.error.execution_count"] = str(self.execution_count)
        if self.ename:
            tags["nbscale.error.ename"] = self.ename
        if self.evalue:
            tags["nbscale.error.evalue"] = self.evalue[:5000]
        return tags


def succeeded() -> StepOutcome:
    """A notebook that ran every cell."""
    return StepOutcome("SUCCEEDED")


def failed(reason: str, **details: Any) -> StepOutcome:
    """A failed run (exit code 1)."""
    return StepOutcome("FAILED", one_line(reason), exit_code=1, **details)


def killed(reason: str, exit_code: int) -> StepOutcome:
    """A cancelled, terminated or timed-out run (exit code 130 or 143)."""
    return StepOutcome("KILLED", one_line(reason), exit_code=exit_code)


def cell_error(cell_index: int, execution_count: int | None, ename: str, evalue: str) -> StepOutcome:
    """A cell raised: FAILED, naming the cell and the error."""
    return failed(f"cell {cell_index} (In [{execution_count}]) raised {ename}: {one_line(evalue, 200)}",
                  cell_index=cell_index, execution_count=execution_count, ename=ename, evalue=one_line(evalue, 1000))


def outcome_of_notebook(nb: Any) -> StepOutcome:
    """Judge a notebook papermill finished without raising.

    papermill treats ``sys.exit()``/``sys.exit(0)`` as a quiet stop; for us a notebook that stopped
    before its last cell did not succeed.
    """
    cells = nb.cells
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        raised = cell.get("metadata", {}).get("papermill", {}).get("exception") is True
        if error is None and not raised:
            continue
        ename = error.get("ename", "") if error else "CellExecutionError"
        evalue = error.get("evalue", "") if error else ""
        if ename == "SystemExit" and evalue in ("", "0", "None"):
            skipped = [c for c in cells[index + 1:] if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None]
            if not skipped:
                return succeeded()
            return failed(f"cell {index} called sys.exit({evalue}) part-way: {len(skipped)} later cell(s) did not run",
                          cell_index=index, execution_count=cell.get("execution_count"), ename=ename, evalue=evalue)
        return cell_error(index, cell.get("execution_count"), ename, evalue)
    return succeeded()
