"""The sweep's plot artifacts, drawn from a result without Ray: every status, numeric and categorical parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_compiler.sweep.plots import write_plots
from workflow_compiler.sweep.results import SweepResult, TrialRow

STATUSES = ["COMPLETED", "EARLY_STOPPED", "FAILED", "COMPLETED", "KILLED"]


def _result(n: int, mode: str = "max") -> SweepResult:
    trials = [TrialRow(trial_id=f"t{i}", number=i, status=STATUSES[i % len(STATUSES)],
                       value=None if STATUSES[i % len(STATUSES)] == "FAILED" else float((i * 7) % 11),
                       params={"lr": 10.0 ** -(i % 4), "depth": [3, 5, None][i % 3], "kind": ["a", "b"][i % 2]})
              for i in range(n)]
    return SweepResult(sweep_id="s1", status="SUCCEEDED", notebook="nb.ipynb", metric="acc", mode=mode, trials=trials,
                       counts={}, parent_run_id="p", experiment_id="0", tracking_uri="sqlite:///x.db", sweep_dir=".", seconds=1.0)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_both_plots_are_written_as_images_of_the_expected_size(tmp_path: Path, mode: str) -> None:
    from matplotlib.image import imread

    paths = write_plots(_result(100, mode), tmp_path)
    assert [p.name for p in paths] == ["objective_by_trial.png", "params_vs_objective.png"]
    by_trial, by_param = (imread(p) for p in paths)
    assert by_trial.shape[:2] == (440, 770)  # 7 x 4 inches at 110 dpi
    assert by_param.shape[:2] == (352, 1320)  # three parameters in one row
    assert by_trial.std() > 0.05  # something was drawn, not a blank canvas


def test_no_plots_when_no_trial_has_a_value(tmp_path: Path) -> None:
    result = _result(3)
    for t in result.trials:
        t.value = None
    assert write_plots(result, tmp_path) == []
