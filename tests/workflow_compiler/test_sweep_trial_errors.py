"""A trial's own failure messages: each says what to change."""

from __future__ import annotations

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
