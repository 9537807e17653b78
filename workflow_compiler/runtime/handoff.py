"""Let a Python kernel start running cells before the step's MLflow run exists.

Creating the run needs ``import mlflow`` in the helper process (2-5 s here), which used to hold the
first cell back. Instead, the kernel gets an import hook: the first ``import mlflow`` in the kernel
waits for a small JSON file naming the run, puts it in ``os.environ`` (``MLFLOW_RUN_ID``,
``MLFLOW_EXPERIMENT_ID``) and lets the import go on. Any MLflow call needs that import first, so
the notebook's metrics always land in the step's run, and cells that never touch MLflow never wait.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..redaction import redact

#: Where, in the step's output folder, the runtime leaves the run for the kernel.
HANDOFF_FILE = ".mlflow-run.json"
#: Seconds the kernel's first ``import mlflow`` waits for the run before giving up with an ImportError.
WAIT_SECONDS = 300

_GATE = '''
def _nbscale_mlflow_gate(path, timeout):
    import json, os, sys, time

    class MlflowRunGate:
        """nbscale: the first import of mlflow waits until the step's MLflow run is known."""

        def find_spec(self, name, import_path=None, target=None):
            if name.partition(".")[0] != "mlflow" or self not in sys.meta_path:
                return None
            sys.meta_path.remove(self)
            deadline = time.monotonic() + timeout
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise ImportError(f"nbscale: the step's MLflow run was not ready after {timeout} s")
                time.sleep(0.02)
            with open(path, encoding="utf-8") as handle:
                env = json.load(handle)
            if "error" in env:
                raise ImportError("nbscale: " + env["error"])
            os.environ.update(env)
            return None

    sys.meta_path.insert(0, MlflowRunGate())

_nbscale_mlflow_gate({path!r}, {timeout!r})
del _nbscale_mlflow_gate
'''


def gate_code(path: Path, timeout: float = WAIT_SECONDS) -> str:
    """Code to run silently in a Python kernel before its first cell."""
    return _GATE.format(path=str(path), timeout=timeout)


def publish_run_env(path: Path, run_env: Callable[[], dict[str, str]]) -> None:
    """Write ``run_env()`` (or the error it raised) where the kernel's gate looks, atomically."""
    try:
        data: dict[str, str] = run_env()
    except Exception as exc:  # the kernel's import must fail with the reason, not wait for its timeout
        data = {"error": redact(f"the step's MLflow run could not be created: {exc}")}
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)
