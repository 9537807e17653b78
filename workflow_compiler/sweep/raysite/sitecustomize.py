"""Start-up hook of the processes of the embedded Ray (on ``PYTHONPATH`` only for them).

``import ray`` loads jsonschema, and jsonschema loads ``rfc3987_syntax`` when it is installed
(jupyter-events pulls it in), which builds a Lark grammar at import: 2.5 s of the 3.2 s that every
Ray worker, agent and trial actor spends importing ray on a 2-core machine. Ray has no hook that
runs before its own imports in a worker, so this file is that hook; the runtime's own processes do
the same through ``runtime.speedups``. A ``sitecustomize`` it shadows (a distribution's, a
user's) still runs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]  # only the "iri" format check needs it


def _run_shadowed() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_run_shadowed()
