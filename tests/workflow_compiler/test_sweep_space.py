"""Search-space parsing, SweepSpec validation and the sweep command line (no Ray needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from workflow_compiler.errors import SpecError
from workflow_compiler.spec import RunSpec, check_run_spec, parse_model
from workflow_compiler.sweep.cli_args import add_sweep_arguments, apply_sweep_file, sweep_from_args
from workflow_compiler.sweep.space import Domain, parse_domain_text, parse_space_item
from workflow_compiler.sweep.spec import SweepSpec, parse_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "expected"), [
    ("randint(50, 400)", {"kind": "randint", "low": 50, "high": 400}),
    ("choice(3, 5, 8, None)", {"kind": "choice", "values": [3, 5, 8, None]}),
    ("choice([3, 5])", {"kind": "choice", "values": [3, 5]}),
    ("choice(null, true, 'a')", {"kind": "choice", "values": [None, True, "a"]}),
    ("grid(-1, 0.5)", {"kind": "grid", "values": [-1, 0.5]}),
    ("loguniform(1e-3, 0.3)", {"kind": "loguniform", "low": 0.001, "high": 0.3}),
    ("uniform(-1, 1)", {"kind": "uniform", "low": -1, "high": 1}),
    ("quniform(0, 1, 0.25)", {"kind": "quniform", "low": 0, "high": 1, "q": 0.25}),
    ("  randint( 1 ,2 ) ", {"kind": "randint", "low": 1, "high": 2}),
])
def test_text_form_parses_and_round_trips(text: str, expected: dict) -> None:
    domain = parse_domain_text(text)
    assert domain.model_dump(exclude_none=True) == expected
    assert parse_domain_text(domain.to_text()) == domain


@pytest.mark.parametrize("form", [
    "randint(50, 400)",
    {"randint": [50, 400]},
    {"kind": "randint", "low": 50, "high": 400},
])
def test_cli_yaml_and_json_forms_agree(form: object) -> None:
    assert Domain.model_validate(form) == Domain(kind="randint", low=50, high=400)
    assert Domain.model_validate(json.loads(json.dumps(form))) == Domain(kind="randint", low=50, high=400)


@pytest.mark.parametrize(("text", "fragment"), [
    ("uniform(5, 1)", "swap them: uniform(1, 5)"),
    ("uniform(1, 1)", "low (1) must be less than high (1)"),
    ("loguniform(0, 1)", "a log scale needs 0 < low < high"),
    ("loguniform(-1, 1)", "no zero or negatives"),
    ("randint(1.5, 3)", "randint takes whole numbers"),
    ("quniform(0, 1, 2)", "use a smaller q"),
    ("quniform(0, 1, -0.1)", "step q must be a positive number"),
    ("uniform(1)", "takes 2 arguments"),
    ("uniform('a', 2)", "bounds must be numbers"),
    ("choice()", "needs at least one value"),
    ("normal(0, 1)", "unknown search space 'normal'"),
    ("randint(low=1, high=2)", "pass arguments by position"),
    ("uniform(float('inf'), 2)", "is not a literal"),
    ("choice(__import__('os').system('touch /tmp/pwned'))", "is not a literal"),
    ("randint(1, 2", "not a search space"),
    ("os.system('x')", "not a search space"),
])
def test_bad_spaces_say_how_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_domain_text(text)
    assert fragment in info.value.message


def test_infinite_bound_in_json_form_is_refused() -> None:
    with pytest.raises(SpecError, match="finite"):
        parse_sweep({"space": {"x": {"kind": "uniform", "low": 0, "high": float("inf")}}, "metric": "m", "mode": "max"})


def test_sweep_spec_rules() -> None:
    ok = parse_sweep({"space": {"a": "grid(1, 2, 3)", "b": "choice('x', 'y')"}, "metric": "loss", "mode": "min", "search": "grid"})
    # a grid search crosses grid(...) and choice(...) axes alike (the last parameter varies fastest)
    assert ok.total_trials() == 6 and ok.effective_samples == 1
    assert ok.grid_points() == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]
    rnd = parse_sweep({"space": {"a": "grid(1, 2)", "b": "uniform(0, 1)"}, "metric": "m", "mode": "max", "samples": 3})
    assert rnd.total_trials() == 6
    with pytest.raises(SpecError, match="b is continuous"):
        parse_sweep({"space": {"b": "uniform(0, 1)"}, "metric": "m", "mode": "max", "search": "grid"})
    with pytest.raises(SpecError, match="Optuna cannot take grid"):
        parse_sweep({"space": {"a": "grid(1, 2)"}, "metric": "m", "mode": "max", "search": "optuna"})
    with pytest.raises(SpecError, match="use 1 or 2"):
        parse_sweep({"space": {"a": "grid(1, 2)"}, "metric": "m", "mode": "max", "gpus_per_trial": 1.5})
    with pytest.raises(SpecError, match="sweep.metric"):
        parse_sweep({"space": {"a": "grid(1, 2)"}, "metric": "bad{metric}", "mode": "max"})
    with pytest.raises(SpecError, match="sweep.space"):
        parse_sweep({"space": {}, "metric": "m", "mode": "max"})
    assert parse_sweep({"space": {"a": "grid(1)"}, "metric": "m", "mode": "max", "gpus_per_trial": 0.25}).gpus_per_trial == 0.25


def test_runspec_carries_a_sweep_and_checks_it_against_the_notebook() -> None:
    spec = parse_model(RunSpec, {"notebook": "examples/train.ipynb", "sweep": {
        "space": {"n_estimators": "randint(50, 400)", "learning_rate": "choice(1, 0.1)"}, "metric": "val_accuracy", "mode": "max"}}, what="run")
    checked = check_run_spec(spec, root=REPO)
    assert checked.sweep is not None
    assert checked.sweep.space["learning_rate"].values == [1.0, 0.1]  # ints become the float the notebook declares
    assert RunSpec.model_validate_json(checked.model_dump_json()) == checked
    assert "sweep" in RunSpec.model_json_schema()["properties"]
    bad = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"space": {"n_estimators": parse_domain_text("uniform(1, 5)")}})})
    with pytest.raises(SpecError, match=r"use randint\(1, 5\)") as info:
        check_run_spec(bad, root=REPO)
    assert info.value.errors[0]["loc"] == ["sweep", "space", "n_estimators"]


@pytest.mark.parametrize(("param", "fragment"), [
    ("model=uniform(1, 2)", "is a str in the notebook"),
    ("nope=choice(1)", "Known parameters: model, n_estimators"),
    ("max_depth=choice(3, 'x')", "expects int or None"),
    ("learning_rate=choice(true)", "expects float"),
])
def test_space_is_checked_against_declared_types(param: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        sweep_from_args(_args("examples/train.ipynb", "--metric", "val_accuracy", "--mode", "max", "--param", param), REPO)
    assert fragment in info.value.message


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    return parser.parse_args(argv)


def test_the_issue_command_line_builds_the_spec() -> None:
    spec = sweep_from_args(_args(
        "examples/train.ipynb", "--param", "n_estimators=randint(50, 400)", "--param", "max_depth=choice(3, 5, 8, None)",
        "--param", "learning_rate=loguniform(1e-3, 0.3)", "--param", "model=boosting", "--samples", "24", "--concurrency", "2",
        "--metric", "val_accuracy", "--mode", "max", "--search", "optuna", "--early-stop", "asha", "--gpus-per-trial", "0.5"), REPO)
    assert spec.parameters == {"model": "boosting"}
    assert spec.sweep is not None and spec.sweep.scheduler == "asha" and spec.sweep.search == "optuna"
    assert spec.sweep.gpus_per_trial == 0.5 and spec.sweep.total_trials() == 24
    assert spec.sweep.space["max_depth"].values == [3, 5, 8, None]


def test_sweep_file_with_cli_overrides(tmp_path: Path) -> None:
    file = tmp_path / "sweep.yaml"
    file.write_text("metric: val_accuracy\nmode: max\nsamples: 4\nparameters: {seed: 1}\nspace:\n"
                    "  n_estimators: randint(10, 20)\n  max_depth: {choice: [3, null]}\n", encoding="utf-8")
    spec = sweep_from_args(_args("examples/train.ipynb", "--sweep", str(file), "--samples", "6", "--param", "seed=3"), REPO)
    assert spec.sweep is not None and spec.sweep.samples == 6 and spec.parameters == {"seed": 3}
    assert spec.sweep.space["max_depth"].values == [3, None]
    base = parse_model(RunSpec, {"notebook": "examples/train.ipynb"}, what="run")
    compiled = apply_sweep_file(base, file, root=REPO)
    assert compiled.sweep is not None and compiled.sweep.samples == 4 and compiled.parameters == {"seed": 1}


def test_cli_needs_something_to_sweep_and_a_metric() -> None:
    with pytest.raises(SpecError, match="nothing to sweep"):
        sweep_from_args(_args("examples/train.ipynb", "--metric", "m", "--mode", "max"), REPO)
    with pytest.raises(SpecError, match="--metric"):
        sweep_from_args(_args("examples/train.ipynb", "--param", "seed=randint(1, 3)"), REPO)
    with pytest.raises(SpecError, match="NAME=SPACE"):
        parse_space_item("randint(1, 2)")
    assert parse_space_item("seed=7") == ("seed", "7")
    assert isinstance(SweepSpec.model_json_schema(), dict)


# --- a random search over listed values only (all grid/choice) never repeats a trial ---------------

@pytest.mark.parametrize(("sweep", "samples", "trials"), [
    ({"a": "choice(1, 2)", "b": "choice('x', 'y')"}, None, 4),  # the default 10 is capped at the 4 combinations
    ({"a": "choice(1, 2)", "b": "choice('x', 'y')"}, 3, 3),
    ({"a": "choice(1, 1, 2)"}, None, 2),  # a value listed twice is one value
    ({"a": "grid(1, 2, 3)", "b": "choice('x', 'y')"}, 2, 6),  # per grid point: 2 of its 2 combinations
    ({"a": "grid(1, 2)"}, None, 2),  # grid(...) only: each point once
    ({"a": "choice(1, 2)", "b": "uniform(0, 1)"}, 10, 10),  # a range never runs out: Tune samples it
])
def test_random_search_over_listed_values_runs_each_combination_at_most_once(sweep: dict, samples: int | None, trials: int) -> None:
    import random

    spec = parse_sweep({"space": sweep, "metric": "m", "mode": "max", **({"samples": samples} if samples else {})})
    assert spec.total_trials() == trials
    points = spec.distinct_points(random.Random(7))
    if "uniform" in str(sweep):
        assert points is None
        return
    assert points is not None and len(points) == trials
    assert len({json.dumps(p, sort_keys=True) for p in points}) == trials  # no trial repeats another
    assert all(list(p) == list(sweep) for p in points)  # every parameter, in the space's order
    assert points == spec.distinct_points(random.Random(7))  # a seed gives the same trials


@pytest.mark.parametrize(("ask", "calls"), [
    (lambda spec: spec.distinct_points(__import__("random").Random(7)), 1),
    (lambda spec: parse_sweep(spec.model_dump()), 1),  # validation
    (lambda spec: spec.draws_points, 1),
], ids=["distinct_points", "validation", "draws_points"])
def test_the_choice_combinations_are_counted_once_per_question(monkeypatch: pytest.MonkeyPatch, ask: object, calls: int) -> None:
    """Counting them lists every choice(...)'s values: once per question, not once per grid point and helper."""
    spec = parse_sweep({"space": {"a": "grid(1, 2, 3, 4)", "b": "choice('x', 'y', 'z')"}, "metric": "m", "mode": "max", "samples": 2})
    counted = SweepSpec.choice_combinations
    seen: list[int | None] = []
    monkeypatch.setattr(SweepSpec, "choice_combinations", lambda self: seen.append(counted(self)) or seen[-1])
    ask(spec)  # type: ignore[operator]
    assert len(seen) == calls, seen


@pytest.mark.parametrize(("sweep", "fragment"), [
    ({"space": {"a": "choice(1, 2)", "b": "choice(3, 4)"}, "samples": 10},
     "samples 10 would repeat trials: the values listed for a, b make only 4 different combinations. Use samples 4 or fewer"),
    ({"space": {"a": "grid(1, 2)", "b": "choice(3, 4)"}, "samples": 3}, "only 2 different combinations for each grid point"),
    ({"space": {"a": "grid(1, 2)"}, "samples": 3}, "would run every grid point 3 times"),
    ({"space": {"a": "choice(1, 2)"}, "samples": 3, "search": "optuna"},
     "Use samples 2 or fewer (Optuna cannot suggest more without repeating one), or give a parameter a range such as uniform(...) "
     "or randint(...) for Optuna to search, or list them with grid(...) and search 'grid'"),
])
def test_samples_beyond_the_listed_combinations_are_refused_with_what_to_do(sweep: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_sweep({"metric": "m", "mode": "max", **sweep})
    assert fragment in info.value.message
    assert parse_sweep({"metric": "m", "mode": "max", **sweep, "search": "grid"}).total_trials() >= 2  # grid's samples repeats it on purpose


def test_values_the_notebook_types_alike_count_once() -> None:
    """learning_rate is a float in the notebook: choice(1, 1.0, 0.1) lists two values once checked."""
    spec = parse_model(RunSpec, {"notebook": "examples/train.ipynb", "sweep": {
        "space": {"learning_rate": "choice(1, 1.0, 0.1)"}, "metric": "val_accuracy", "mode": "max", "samples": 3}}, what="run")
    with pytest.raises(SpecError, match="only 2 different combinations"):
        check_run_spec(spec, root=REPO)
    default = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"samples": None})})  # type: ignore[union-attr]
    assert check_run_spec(default, root=REPO).sweep.total_trials() == 2  # type: ignore[union-attr]


@pytest.mark.parametrize("sweep", [
    {"space": {"a": "choice(1, 2)", "b": "choice(3, 4)"}, "samples": 10},
    {"space": {"a": "grid(1, 2)", "b": "choice(3, 4)"}, "samples": 3},
    {"space": {"a": "choice(1, 2)"}, "samples": 3, "search": "optuna"},
])
def test_a_sweep_saved_before_samples_were_checked_still_resumes(sweep: dict, home: Path) -> None:
    """A sweep saved (or queued) by an earlier nbscale with more samples than combinations is loaded as it ran:
    its trials were Tune's draws, repeats and all, so ``--resume`` neither refuses it nor drops repeats."""
    from workflow_compiler.cli_sweep import ensure_sweep_record
    from workflow_compiler.store import RunStore
    from workflow_compiler.sweep.driver import _load_state, sweeps_dir

    saved = {"notebook": "objective.ipynb", "sweep": {"metric": "m", "mode": "max", **sweep}}
    with pytest.raises(SpecError, match="would"):
        parse_model(RunSpec, saved, what="run")  # a new sweep like it is still refused
    folder = sweeps_dir() / "nbs-0123456789"
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"sweep_id": "nbs-0123456789", "spec": saved}), encoding="utf-8")
    spec, _ = _load_state("nbs-0123456789")
    assert spec.sweep is not None and spec.sweep.samples == sweep["samples"] and not spec.sweep.draws_points
    assert spec.sweep.total_trials() == sweep["samples"] * len(spec.sweep.grid_points())
    ensure_sweep_record("nbs-0123456789")  # a sweep saved before sweeps had records gets one
    assert RunStore().get("nbs-0123456789").kind == "sweep"


# --- a grid search enumerates choice(...) as it does grid(...) --------------------------------------
@pytest.mark.parametrize(("space", "samples", "trials"), [
    ({"name": 'choice("a,b", "c)", "$(id)", "{{x}}")'}, None, 4),  # the values as listed, shell and Argo syntax and all
    ({"a": "choice(1, 2)", "b": "grid('x', 'y', 'z')"}, None, 6),  # crossed with the grid(...) axes
    ({"a": "choice(1, 2)", "b": "choice(3, 4)"}, 3, 12),  # samples repeats the grid, as Tune's grid_search does
])
def test_a_grid_search_runs_every_choice(space: dict[str, str], samples: int | None, trials: int) -> None:
    sweep = parse_sweep({"space": space, "metric": "loss", "mode": "min", "search": "grid", "samples": samples})
    points = sweep.grid_points() * sweep.effective_samples
    assert sweep.total_trials() == len(points) == trials
    for name, domain in sweep.space.items():
        assert {json.dumps(p[name]) for p in points} == {json.dumps(v) for v in domain.values or []}
    if "name" in space:
        assert [p["name"] for p in points] == ["a,b", "c)", "$(id)", "{{x}}"]


def test_tune_gets_a_grid_search_for_choice_only_in_a_grid_search() -> None:
    space = {"a": "choice(1, 2)", "b": "grid(3, 4)"}
    grid = parse_sweep({"space": space, "metric": "loss", "mode": "min", "search": "grid"}).tune_space()
    assert grid == {"a": {"grid_search": [1, 2]}, "b": {"grid_search": [3, 4]}}
    sampled = parse_sweep({"space": space, "metric": "loss", "mode": "min", "samples": 2}).tune_space()
    assert sampled["b"] == {"grid_search": [3, 4]} and sampled["a"].categories == [1, 2]


# --- the mode is never guessed: a loss maximised picks the worst trial ------------------------------
def test_a_metric_without_a_mode_is_refused_with_both_flags() -> None:
    asked = r"--metric loss: is a higher or a lower metric better\? Choose max \(accuracy\) or min \(loss\): --mode max or --mode min"
    with pytest.raises(SpecError, match=asked) as caught:
        sweep_from_args(_args("examples/train.ipynb", "--metric", "loss", "--param", "n_estimators=randint(50, 400)"), REPO)
    assert caught.value.errors == [{"loc": ["sweep", "mode"], "msg": caught.value.errors[0]["msg"]}]
    with pytest.raises(SpecError, match=r"sweep\.mode: is a higher or a lower metric better\?.*'mode: min' in a sweep file"):
        parse_sweep({"space": {"a": "grid(1, 2)"}, "metric": "loss"})


@pytest.mark.parametrize("mode", ["min", "max"])
def test_the_mode_given_is_the_mode_used(mode: str) -> None:
    args = _args("examples/train.ipynb", "--metric", "loss", "--mode", mode, "--param", "n_estimators=randint(50, 400)")
    assert sweep_from_args(args, REPO).sweep.mode == mode
