"""Start-up time savings shared by the runtime's processes."""

from __future__ import annotations

import sys


def skip_slow_optional_imports() -> None:
    """Keep ``rfc3987_syntax`` from loading in this process.

    jsonschema (imported by nbformat and mlflow) loads it, when installed, only to check the
    ``iri`` string format, which neither notebooks nor MLflow use; it compiles a Lark grammar at
    import time, 1-3 s on a 2-core machine, which would be a third of a short step's run time.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
