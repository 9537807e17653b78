"""Load a small YAML configuration file into a pydantic model, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import CompileError, field_errors

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(model: type[M], path: Path, *, what: str, env: str | None = None) -> M:
    """Read ``path`` as YAML and validate it as ``model``; any problem is a CompileError.

    ``what`` names the file in messages ("pools file"); ``env`` is the variable that points at it, if any.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fix = f"fix ${env} or the path given" if env else "check the path given"
        raise CompileError(f"The {what} {path} does not exist; {fix}.") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CompileError(f"The {what} {path} cannot be read as YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CompileError(f"The {what} {path} must hold a mapping, not {type(data).__name__}.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors, lines = field_errors(exc)
        raise CompileError(f"The {what} {path} is invalid: {lines}", errors=errors) from None
