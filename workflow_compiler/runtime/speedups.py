"""Start-up and exit time savings shared by the runtime's processes (the step, the local worker)."""

from __future__ import annotations

import logging
import os
import sys


def skip_slow_optional_imports() -> None:
    """Keep ``rfc3987_syntax`` from loading in this process.

    jsonschema (imported by nbformat and mlflow) loads it, when installed, only to check the
    ``iri`` string format, which neither notebooks nor MLflow use; it compiles a Lark grammar at
    import time, 1-3 s on a 2-core machine, which would be a third of a short step's run time.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def exit_now(code: int) -> None:
    """End the process with ``code`` once everything it reports is written, skipping the teardown of
    its modules (papermill, nbconvert, pydantic: 0.1-0.3 s here), which whoever follows the run waits for.

    Only for a process's entry point, after its files are closed and its children have exited.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
