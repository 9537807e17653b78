"""A random search over listed values only, drawn without replacement (``SweepSpec.distinct_points``).

Tune's own generator samples ``choice`` with replacement, and its ``points_to_evaluate`` reads a
list or dict value as nested keys, so the trials are a fixed list that this searcher hands out in
order. Its position is saved with Tune's experiment state, so a resumed sweep goes on where it was.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher


class PointSearcher(Searcher):
    """Suggests each of ``points`` once, in order, then says the search is finished."""

    def __init__(self, points: list[dict[str, Any]], *, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.points = points
        self.given = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next point, or ``Searcher.FINISHED`` once every point has been given out."""
        if self.given >= len(self.points):
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel is a str
        self.given += 1
        return dict(self.points[self.given - 1])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Nothing to learn: the points were drawn before the sweep began."""

    def save(self, checkpoint_path: str) -> None:
        """Keep the points and how many were given out (Tune calls this with its experiment state)."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump({"points": self.points, "given": self.given}, file)

    def restore(self, checkpoint_path: str) -> None:
        """Take up the points and position saved by ``save`` (a resumed sweep)."""
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)  # noqa: S301 - the sweep's own private folder, written by save above
        self.points, self.given = state["points"], state["given"]
