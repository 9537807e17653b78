"""What a sweep's driver spends per trial and before its first one (B2 of issue 19), without a Ray."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.spec import RunSpec, parse_model
from workflow_compiler.sweep import driver
from workflow_compiler.sweep.progress import SweepProgress
from workflow_compiler.sweep.session import SESSIONS, SweepSession


class _Trial:
    """Stands in for Tune's ``Trial``: its ``last_result`` is what Tune would have, or a round trip to its actor."""

    def __init__(self, last_result: dict[str, Any] | None) -> None:
        self.trial_id, self.config, self.status, self.num_failures, self.error_file = "t1", {"x": 1}, "RUNNING", 0, None
        self._last = last_result

    @property
    def last_result(self) -> dict[str, Any]:
        if self._last is None:
            raise AssertionError("before a first report Trial.last_result asks the trial's actor (ray.get in Tune's loop)")
        return self._last


@pytest.fixture
def sweep_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SweepSession:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path))
    spec = parse_model(RunSpec, {"notebook": "nb.ipynb", "sweep": {"space": {"x": "grid(1, 2)"}, "metric": "score", "mode": "max"}}, what="test")
    session = SweepSession("s1", spec, None, "1", "p", SweepProgress(sweep_id="s1", metric="score", mode="max", total=2, enabled=False))
    SESSIONS["s1"] = session
    yield session
    SESSIONS.pop("s1", None)


def test_a_starting_trial_gets_its_row_without_asking_its_actor(sweep_session: SweepSession) -> None:
    from workflow_compiler.sweep.callbacks import SweepCallback

    callback = SweepCallback("s1")
    starting = _Trial(None)
    callback.on_trial_start(0, [starting], starting)
    row = sweep_session.rows["t1"]
    assert (row.status, row.value, row.run_id, row.attempts) == ("RUNNING", None, None, 1)
    reported = _Trial({"score": 0.5, "nbscale_run_id": "r1", "training_iteration": 1})
    callback.on_trial_result(0, [reported], reported, result={"score": 0.5})
    row = sweep_session.rows["t1"]
    assert (row.status, row.value, row.run_id) == ("RUNNING", 0.5, "r1")


@pytest.mark.parametrize("fresh_kernel", [False, True])
def test_the_agent_and_the_trial_host_start_side_by_side_while_the_driver_talks_to_mlflow(
        monkeypatch: pytest.MonkeyPatch, fresh_kernel: bool) -> None:
    # the block, the agent's start and the host's start all wait here: one after the other, the wait times out
    together = threading.Barrier(2 if fresh_kernel else 3, timeout=10)

    def agent(uri: str) -> str:
        together.wait()
        return f"{uri}.sock"

    def host() -> str:
        if fresh_kernel:
            raise AssertionError("a fresh_kernel sweep runs no trial in the host")
        together.wait()
        return "trials.sock"

    monkeypatch.setattr(driver, "_agent_socket", agent)
    monkeypatch.setattr(driver.trial_host, "start_for_local_ray", host)
    with driver._helpers_starting("uri", fresh_kernel=fresh_kernel) as helpers:
        together.wait()  # the driver's MLflow work
        sockets = helpers()
    assert sockets == ("uri.sock", None if fresh_kernel else "trials.sock")


def _mutate_rc_list() -> None:
    import matplotlib

    matplotlib.rcParams["font.sans-serif"].insert(0, "Trial Font")  # in place: the same list object


@pytest.mark.parametrize("change", [
    pytest.param(lambda: __import__("matplotlib").rcParams.update({"lines.linewidth": 7.0}), id="matplotlib option"),
    pytest.param(_mutate_rc_list, id="matplotlib list changed in place"),
    pytest.param(lambda: __import__("pandas").set_option("display.max_rows", 3), id="pandas option"),
])
def test_a_trials_library_options_are_reset_and_untouched_ones_are_not_set_anew(monkeypatch: pytest.MonkeyPatch,
                                                                                 change: Any) -> None:
    import matplotlib
    import pandas

    from workflow_compiler.sweep import worker

    worker._reset_library_state()
    clean = (matplotlib.rcParams["lines.linewidth"], list(matplotlib.rcParams["font.sans-serif"]), pandas.get_option("display.max_rows"))
    change()
    worker._reset_library_state()
    assert (matplotlib.rcParams["lines.linewidth"], list(matplotlib.rcParams["font.sans-serif"]),
            pandas.get_option("display.max_rows")) == clean
    resets: list[str] = []
    monkeypatch.setattr(matplotlib, "rcdefaults", lambda: resets.append("matplotlib"))
    monkeypatch.setattr(pandas, "reset_option", lambda pattern: resets.append("pandas"))
    worker._reset_library_state()  # a trial that changed nothing
    assert resets == []
