"""A trial's own failure messages: each says what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_compiler.sweep.trial import missing_metric_error


@pytest.mark.parametrize(
    ("logged", "expected"),
    [
        ({"score": 1.0, "loss": 0.3}, "it logged 'loss', 'score': pass one of those as the sweep's metric"),
        ({}, "call mlflow.log_metric('scor', value) in it"),
    ],
)
def test_a_metric_never_logged_names_what_was(logged: dict[str, float], expected: str) -> None:
    message = missing_metric_error("scor", logged)
    assert message.startswith("the notebook never logged the metric 'scor'")
    assert expected in message


def test_a_signal_handler_in_a_trial_off_the_main_thread_says_to_use_a_fresh_kernel(tmp_path: Path) -> None:
    """In a Ray worker, Tune runs the trial in a thread: Python refuses the handler, and the trial's
    error says what to do instead. On the main thread (the trial host's child) the same cell works."""
    import signal
    import threading

    import nbformat

    from workflow_compiler.sweep.worker import FAILED, SIGNAL_IN_THREAD, WarmNotebookRunner

    cell = "import signal\nprevious = signal.signal(signal.SIGUSR1, lambda *a: None)\nsignal.signal(signal.SIGUSR1, previous)"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)]), tmp_path / "nb.ipynb")
    runner, original, outcomes = WarmNotebookRunner(), signal.signal, []
    thread = threading.Thread(target=lambda: outcomes.append(runner.run(tmp_path / "nb.ipynb", tmp_path / "a.ipynb", {}, cwd=tmp_path)))
    thread.start()
    thread.join()
    assert (outcomes[0].status, outcomes[0].error) == (FAILED, f"ValueError: {SIGNAL_IN_THREAD}")
    assert signal.signal is original  # put back once the trial ended
    assert runner.run(tmp_path / "nb.ipynb", tmp_path / "b.ipynb", {}, cwd=tmp_path).status == "COMPLETED"
