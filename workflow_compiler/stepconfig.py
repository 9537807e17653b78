"""What one step of a compiled workflow needs to know, passed from the compiler to the runtime.

The compiler serialises a ``StepConfig`` into the container's arguments with ``to_arg()``; the
runtime reads it back with ``from_arg()``. Every user-supplied string (notebook path, experiment,
tags, parameter values) crosses the manifest only inside these JSON documents, with ``{`` and ``}``
escaped so that no value can form an Argo ``{{...}}`` expression.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def argo_safe_json(value: Any) -> str:
    """JSON for ``value`` in which no ``{{`` or ``}}`` can appear.

    Braces inside strings become ``\\u007b``/``\\u007d`` (``json.loads`` restores them byte for
    byte); structural braces are separated by the space ``json.dumps`` puts after ``:`` and ``,``,
    and a closing run like ``}}`` is broken with a space, which JSON ignores.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    out: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            elif ch in "{}":
                out.append("\\u007b" if ch == "{" else "\\u007d")
                continue
        elif ch == '"':
            in_string = True
        elif ch in "{}" and out and out[-1] == ch:
            out.append(" ")
        out.append(ch)
    return "".join(out)


class StepConfig(BaseModel):
    """Settings of one notebook execution that the step runtime receives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notebook: str = Field(..., description="Notebook path relative to the container's working directory")
    experiment: str
    user: str
    tags: dict[str, str] = Field(default_factory=dict)
    html: bool = True
    notebook_sha256: str = ""
    step: str | None = Field(None, description="Pipeline step name; None for a single run")
    kernel: str = "python3"
    image: str = ""
    timeout_seconds: int | None = None

    def to_arg(self) -> str:
        """This config as one command-line argument, safe inside an Argo manifest."""
        return argo_safe_json(self.model_dump(mode="json"))

    @classmethod
    def from_arg(cls, text: str) -> StepConfig:
        """Read a config written by ``to_arg``."""
        return cls.model_validate_json(text)
