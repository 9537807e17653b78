"""A warm trial's cell output, in the shape a papermill kernel gives it.

``CellCapture`` collects one cell's outputs as nbformat outputs; ``CellStream`` is the
``sys.stdout``/``sys.stderr`` a trial's notebook writes to, which must behave as ipykernel's
``OutStream`` does, since anything that works in a kernel must work in a warm trial.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any


def new_output(kind: str, **fields: Any) -> Any:
    """One nbformat v4 output (``stream``, ``display_data``, ``execute_result``, ``error``)."""
    import nbformat

    return nbformat.v4.new_output(kind, **fields)


class CellCapture:
    """Collects a cell's outputs in nbformat shape (streams merged as ipykernel does)."""

    def __init__(self) -> None:
        self.outputs: list[Any] = []
        self.execution_count: int | None = None

    def stream(self, name: str, text: str) -> None:
        """Append ``text`` to the cell's ``name`` stream (stdout, stderr)."""
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
            last["text"] += text
        else:
            self.outputs.append(new_output("stream", name=name, text=text))


class CellStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` during a trial: text goes to the current cell's stream output.

    It is the text file a papermill kernel gives a notebook (ipykernel's ``OutStream``): a
    ``TextIOBase`` that is no tty, and whose ``fileno()`` is the process's own stream, so that
    ``faulthandler.enable()`` and ``subprocess.run(..., stdout=sys.stdout)`` work; what they write
    there bypasses the notebook, as in a kernel.
    """

    def __init__(self, capture: Callable[[], CellCapture | None], name: str, fallback: Any) -> None:
        super().__init__()
        self._capture, self._name, self._fallback = capture, name, fallback

    @property
    def name(self) -> str:
        return self._name

    encoding = "UTF-8"  # as ipykernel's OutStream: the text is Python's, the bytes never this object's

    def write(self, text: str) -> int:
        current = self._capture()
        if current is None:
            written = self._fallback.write(text)  # Ray's worker streams answer None, not a count
            return len(text) if written is None else int(written)
        current.stream(self._name, text)
        return len(text)

    def fileno(self) -> int:
        try:
            return int(self._fallback.fileno())
        except (AttributeError, ValueError, OSError) as exc:
            raise io.UnsupportedOperation(f"{self._name} has no file descriptor here: {exc}") from None

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True
