"""``python -m workflow_compiler.tracking``: the warm tracking agent process, serving steps and trial workers."""

from __future__ import annotations

from .agent import ServeHandlers, run_agent
from .step_tracker import serve
from .trial_tracker import serve_trials


def warm_up() -> None:
    """Import MLflow, its SQLite store and the steps' MLflow calls (the import is the point)."""
    from ..runtime.speedups import skip_slow_optional_imports

    skip_slow_optional_imports()
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401

    from ..runtime import tracking  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Serve the ``step`` protocol (step_tracker.py) and the ``trials`` protocol (trial_tracker.py)."""
    handlers = ServeHandlers()
    handlers.register("step", serve)
    handlers.register("trials", serve_trials)
    run_agent(argv, handlers, warm_up)


if __name__ == "__main__":
    main()
