"""The sweep spec: what to vary, how to search, and what each trial may use.

It lives in ``RunSpec.sweep`` (``RunSpec`` with a ``sweep`` is a sweep of that notebook, with
``RunSpec.parameters`` held fixed), and it also loads from a YAML file for
``nbscale compile --sweep sweep.yaml``. This module must not import ``workflow_compiler.spec``
(that module imports this one; ``spec.check_sweep`` checks a RunSpec's sweep against its notebook).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import SpecError
from .space import Domain, distinct_values

if TYPE_CHECKING:
    import random

#: Validation context of a spec that an earlier nbscale saved (a sweep's state, for ``--resume``):
#: checks added since, which refuse what it once accepted, let it through (``SweepSpec.repeats_combinations``).
SAVED = {"nbscale.saved": True}
#: Default number of trials of a random or Optuna search; a grid search runs each point once.
DEFAULT_SAMPLES = 10
#: Why a sweep without ``mode`` is refused, and how to say it (flag, magic and file alike).
MODE_MISSING = ("is a higher or a lower metric better? Choose max (accuracy) or min (loss): "
                "--mode max or --mode min on the command line, 'mode: min' in a sweep file")
_METRIC_NAME = r"^[A-Za-z0-9_\-. /]{1,250}$"  # the characters MLflow accepts in a metric name
#: ``nbscale sweep``'s flag names (argparse dests) -> SweepSpec fields: a sweep file may use either spelling.
CLI_KEYS = {
    "samples": "samples", "concurrency": "concurrency", "metric": "metric", "mode": "mode",
    "search": "search", "early_stop": "scheduler", "cpus_per_trial": "cpus_per_trial",
    "gpus_per_trial": "gpus_per_trial", "time_budget": "time_budget_s", "max_failures": "max_failures",
    "fresh_kernel": "fresh_kernel", "grace_period": "grace_period", "seed": "seed",
}


def _without_default(schema: dict[str, Any]) -> None:
    """The JSON schema shows no default for ``mode``: a form then starts blank instead of showing one as chosen."""
    schema.pop("default", None)


def canonical_sweep_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the CLI's spellings (``early_stop``, ``early-stop``, ``time_budget``) as SweepSpec's field names.

    Raises SpecError when one field is given under two spellings.
    """
    out: dict[str, Any] = {}
    spelled: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_") if isinstance(key, str) else key
        field = CLI_KEYS.get(name, name)
        if field in out:
            raise SpecError(f"sweep keys {spelled[field]!r} and {key!r} both set {field!r}; keep one of them.",
                            errors=[{"loc": ["sweep", str(key)], "msg": f"sets {field!r} again"}])
        out[field], spelled[field] = value, key
    return out


class SweepSpec(BaseModel):
    """A hyperparameter search over some of a notebook's parameters."""

    model_config = ConfigDict(extra="forbid")

    space: dict[str, Domain] = Field(..., min_length=1, description="Search space per parameter, e.g. {'n_estimators': 'randint(50, 400)'}")
    metric: str = Field(..., pattern=_METRIC_NAME, description="The objective: a metric the notebook logs with mlflow.log_metric; its last value counts")
    # None only until _mode_said refuses it: a missing field would read "required", this says how to answer
    mode: Literal["max", "min"] = Field(None, validate_default=True, json_schema_extra=_without_default,  # type: ignore[assignment]
                                        description="max if a higher metric is better (accuracy), min if lower is (loss); "
                                                    "no default: a wrong guess picks the worst trial")
    samples: int | None = Field(None, ge=1, le=100_000,
                                description="Trials to run (random, optuna); repeats of the grid (grid). Default 10 for random/optuna, 1 for grid. "
                                            "When every parameter is grid(...)/choice(...), at most their combinations: a random search never repeats one")
    concurrency: int = Field(2, ge=1, le=1024, description="Trials running at once, at most")
    search: Literal["random", "grid", "optuna"] = Field("random", description="random sampling, full grid, or Optuna TPE")
    scheduler: Literal["fifo", "asha"] = Field("fifo", description="fifo runs every trial to the end; asha stops poor trials early")
    cpus_per_trial: float = Field(1.0, gt=0, le=512, description="CPU cores reserved per trial (fractions allowed)")
    gpus_per_trial: float = Field(0.0, ge=0, le=64, description="GPUs per trial: a fraction such as 0.5 shares one GPU, above 1 whole GPUs")
    time_budget_s: int | None = Field(None, gt=0, le=30 * 24 * 3600, description="Stop starting and running trials after this many seconds")
    max_failures: int = Field(0, ge=0, le=100, description="Retries of a trial whose notebook raised or whose kernel died")
    fresh_kernel: bool = Field(False, description="Run every trial in a new process instead of a warm worker")
    grace_period: int = Field(1, ge=1, le=1_000_000, description="ASHA: reports before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1, le=100, description="ASHA: keep 1/reduction_factor of trials at each rung")
    max_steps: int = Field(1000, ge=1, le=10_000_000, description="ASHA: the most reports a trial makes")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Seed of the search algorithm, for a reproducible sequence of trials")

    @model_validator(mode="before")
    @classmethod
    def _cli_spellings(cls, data: Any) -> Any:
        return canonical_sweep_keys(data) if isinstance(data, dict) else data

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_said(cls, value: Any) -> Any:
        if value is None:
            raise ValueError(MODE_MISSING)
        return value

    @field_validator("space")
    @classmethod
    def _identifier_names(cls, value: dict[str, Domain]) -> dict[str, Domain]:
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"swept parameter names must be Python identifiers: {', '.join(map(repr, bad))}")
        return value

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"{value} GPUs: a trial shares one GPU (0 < gpus < 1) or takes whole GPUs (1, 2, ...); "
                             f"use {math.floor(value)} or {math.ceil(value)}")
        return value

    @model_validator(mode="after")
    def _search_fits_space(self) -> SweepSpec:
        kinds = {d.kind for d in self.space.values()}
        if self.search == "grid" and kinds - {"grid", "choice"}:
            continuous = [n for n, d in self.space.items() if d.kind not in ("grid", "choice")]
            raise ValueError(f"search 'grid' enumerates values, but {', '.join(continuous)} {'is' if len(continuous) == 1 else 'are'} continuous; "
                             "use grid(...) values for them or search 'random'/'optuna'")
        if self.search == "optuna" and "grid" in kinds:
            gridded = [n for n, d in self.space.items() if d.kind == "grid"]
            raise ValueError(f"Optuna cannot take grid(...) ({', '.join(gridded)}); use choice(...) with search 'optuna', or search 'grid'")
        return self

    @model_validator(mode="after")
    def _samples_fit_listed_values(self, info: ValidationInfo) -> SweepSpec:
        combinations = self.choice_combinations()
        if not self._repeats(combinations) or info.context == SAVED:  # saved: it ran with Tune's repeats, --resume finishes it so
            return self
        chosen = [n for n, d in self.space.items() if d.kind == "choice"]
        if not chosen:
            raise ValueError(f"samples {self.samples} would run every grid point {self.samples} times: every parameter is grid(...). "
                             f"To repeat the grid on purpose use search 'grid' (its samples repeats the grid); else leave samples out")
        where = " for each grid point" if len(chosen) < len(self.space) else ""
        # Optuna too: past that many trials it must suggest a combination again, and Tune's OptunaSearch runs it again
        aside = {"random": " (a random search never repeats one)", "optuna": " (Optuna cannot suggest more without repeating one)"}
        ranged = ", or give a parameter a range such as uniform(...) or randint(...) for Optuna to search" if self.search == "optuna" else ""
        raise ValueError(f"samples {self.samples} would repeat trials: the values listed for {', '.join(chosen)} make only "
                         f"{combinations} different combination{'s' if combinations != 1 else ''}{where}. Use samples {combinations} "
                         f"or fewer{aside[self.search]}{ranged}, or list them with grid(...) and search 'grid' "
                         "to run every combination (samples then repeats the grid)")

    @property
    def repeats_combinations(self) -> bool:
        """``samples`` above the different ``choice(...)`` combinations (not grid): refused now, so only a sweep saved
        by an earlier nbscale has it (``SAVED``). Its trials were Tune's draws, repeats and all, not ``distinct_points``."""
        return self._repeats(self.choice_combinations())

    def _repeats(self, combinations: int | None) -> bool:
        return combinations is not None and self.search != "grid" and self.samples is not None and self.samples > combinations

    @property
    def effective_samples(self) -> int:
        """``samples`` with its default filled in: at most the different ``choice(...)`` combinations when every parameter lists its values."""
        return self._samples(None if self.samples or self.search == "grid" else self.choice_combinations())

    def _samples(self, combinations: int | None) -> int:
        if self.samples:
            return self.samples
        if self.search == "grid":
            return 1
        return DEFAULT_SAMPLES if combinations is None else min(DEFAULT_SAMPLES, combinations)

    def choice_combinations(self) -> int | None:
        """How many different combinations of the ``choice(...)`` values there are when every parameter
        lists its values (``grid``/``choice``; 1 with no ``choice``), else None: a range never runs out."""
        if any(d.kind not in ("grid", "choice") for d in self.space.values()):
            return None
        return math.prod(len(distinct_values(d.values or [])) for d in self.space.values() if d.kind == "choice")

    @property
    def draws_points(self) -> bool:
        """True for a random search whose every parameter lists its values: its trials are ``distinct_points``."""
        return self._draws(self.choice_combinations())

    def _draws(self, combinations: int | None) -> bool:
        return self.search == "random" and combinations is not None and not self._repeats(combinations)

    def distinct_points(self, rng: random.Random) -> list[dict[str, Any]] | None:
        """A random search's trials over listed values only, drawn without replacement: each grid point
        with ``effective_samples`` different combinations of the ``choice(...)`` values. None for any
        other sweep: Tune samples it (a range never repeats a point; Optuna chooses its own)."""
        combinations = self.choice_combinations()  # once: each use below would list every choice's values again
        if not self._draws(combinations) or combinations is None:
            return None
        axes = [(name, distinct_values(d.values or [])) for name, d in self.space.items() if d.kind == "choice"]
        draws = min(self._samples(combinations), combinations)
        points = []
        for grid_point in self.grid_points():
            for index in rng.sample(range(combinations), draws):
                chosen = dict(grid_point)
                for name, values in reversed(axes):  # the index in mixed radix: the last axis varies fastest
                    index, digit = divmod(index, len(values))
                    chosen[name] = values[digit]
                points.append({name: chosen[name] for name in self.space})
        return points

    def enumerates(self, domain: Domain) -> bool:
        """True when ``domain`` is an axis crossed into every combination: ``grid(...)`` always,
        ``choice(...)`` too in a grid search (which enumerates values, as its name says); else sampled."""
        return domain.kind == "grid" or (self.search == "grid" and domain.kind == "choice")

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of the enumerated axes (``enumerates``), crossed, in order (the last parameter varies fastest).

        One meaning everywhere (Ray Tune, Argo fan-out, the trial count): ``grid(...)`` axes are
        crossed; ``choice(...)`` is crossed in a grid search and sampled for each trial in the others, like the ranges.
        """
        points: list[dict[str, Any]] = [{}]
        for name, domain in self.space.items():
            if self.enumerates(domain):
                points = [{**p, name: v} for p in points for v in domain.grid_values()]
        return points

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune's ``param_space``: enumerated axes as ``grid_search``, the others as Tune's samplers."""
        return {name: domain.to_tune(enumerate_values=self.enumerates(domain)) for name, domain in self.space.items()}

    def total_trials(self) -> int:
        """How many trials this sweep runs (before retries): the grid's points, ``samples`` times each."""
        return len(self.grid_points()) * self.effective_samples


def parse_sweep(data: Any, *, what: str = "sweep spec") -> SweepSpec:
    """Validate a mapping as a SweepSpec; errors become one SpecError listing every field."""
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        errors = [{"loc": ["sweep", *map(str, e["loc"])], "msg": _message(e)} for e in exc.errors()]
        lines = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        raise SpecError(f"invalid {what}: {lines}", errors=errors) from None


def valid_keys() -> list[str]:
    """Every key a sweep mapping takes: SweepSpec's fields and the CLI's spellings of them."""
    return sorted(set(SweepSpec.model_fields) | set(CLI_KEYS))


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key; valid keys: {', '.join(valid_keys())}"
    return str(error["msg"]).removeprefix("Value error, ")


#: The keys beside ``sweep:`` when a file wraps the sweep fields in it.
FILE_KEYS = ("parameters", "tracking", "sweep")


def split_sweep_file(data: dict[str, Any], *, what: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A sweep file's ``(parameters, tracking, sweep fields)``, the latter with the CLI's spellings as field names.

    With a ``sweep:`` key, any other key than ``parameters`` and ``tracking`` is refused (a typo
    there would otherwise be ignored); without one, every key but those two is a sweep field.
    """
    data = dict(data)
    fixed = dict(data.pop("parameters", None) or {})
    tracking = dict(data.pop("tracking", None) or {})
    if "sweep" in data:
        sweep = data.pop("sweep")
        if data:
            raise SpecError(f"{what}: unknown key(s) {', '.join(map(repr, data))} beside 'sweep'; valid there: {', '.join(FILE_KEYS)}.",
                            errors=[{"loc": [str(key)], "msg": f"unknown key; valid: {', '.join(FILE_KEYS)}"} for key in data])
        data = dict(sweep or {})
    return fixed, tracking, canonical_sweep_keys(data)


def load_sweep_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sweep YAML/JSON file as a mapping (validated later, once CLI overrides are applied).

    The file may hold the sweep fields directly, or a ``sweep:`` key with them plus optional
    ``parameters:`` (fixed values) and ``tracking:``.
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep file.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} must hold a mapping with 'space' and 'metric', not {type(data).__name__}.")
    return data
