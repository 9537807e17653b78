"""The command-line grammar of ``nbscale sweep``, shared by the CLI and the ``%nbscale sweep`` magic.

``--param NAME=SPACE`` takes a search space (``randint(50, 400)``) or, when the value is not a
call, a fixed value typed by the notebook (``--param seed=7``). ``--sweep FILE`` loads the same
fields from YAML; flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import SpecError
from ..inspection import inspect_notebook
from ..params import check_parameters, coerce_text, lookup_parameter, split_assignment
from ..paths import resolve_notebook_path
from ..spec import RunSpec, TrackingSpec, check_sweep, parse_model
from .space import Domain, parse_space_item
from .spec import CLI_KEYS, MODE_MISSING, load_sweep_file, parse_sweep, split_sweep_file


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of ``nbscale sweep`` (``nbscale sweep NOTEBOOK ...`` or ``nbscale sweep --resume ID``)."""
    parser.add_argument("notebook", nargs="?", help="the notebook to sweep (omit with --resume)")
    parser.add_argument("--param", dest="sweep_params", action="append", default=[], metavar="NAME=SPACE",
                        help="search space of a parameter, e.g. 'n_estimators=randint(50, 400)', 'max_depth=choice(3, 5, None)', "
                             "'lr=loguniform(1e-3, 0.3)'; a plain value (seed=7) holds it fixed. Repeatable.")
    parser.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], metavar="NAME=VALUE",
                        help="a fixed notebook parameter for every trial; repeatable")
    parser.add_argument("--sweep", dest="sweep_file", metavar="FILE", help="YAML file with the sweep (space, metric, ...); flags override it")
    search = parser.add_argument_group("search")
    search.add_argument("--samples", type=int, help="number of trials (random/optuna; default 10, at most the combinations when every parameter "
                                                     "is grid(...)/choice(...), which a random search never repeats) or grid repeats (default 1)")
    search.add_argument("--concurrency", type=int, help="trials at once (default 2)")
    search.add_argument("--metric", help="objective metric the notebook logs with mlflow.log_metric")
    search.add_argument("--mode", choices=["max", "min"], help="max if a higher metric is better, min if lower is (required with --metric)")
    search.add_argument("--search", choices=["random", "grid", "optuna"], help="search algorithm (default random)")
    search.add_argument("--early-stop", choices=["fifo", "asha"], help="asha stops poor trials part-way (default fifo: none)")
    search.add_argument("--grace-period", type=int, help="ASHA: reports before a trial may be stopped (default 1)")
    search.add_argument("--seed", type=int, help="seed of the search algorithm")
    trial = parser.add_argument_group("trials")
    trial.add_argument("--cpus-per-trial", type=float, help="CPU cores per trial (default 1)")
    trial.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; 0.5 puts two trials on one GPU (default 0)")
    trial.add_argument("--time-budget", type=int, metavar="SECONDS", help="stop the sweep after this long")
    trial.add_argument("--max-failures", type=int, help="retries of a failed trial (default 0)")
    trial.add_argument("--fresh-kernel", action="store_const", const=True, help="a new process per trial instead of a warm worker")
    parser.add_argument("--pool", help="GPU pool from the pool configuration (cluster)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the notebook's name)")
    parser.add_argument("--resume", metavar="SWEEP_ID", help="finish an interrupted sweep without rerunning completed trials")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no live display")


def sweep_from_args(args: argparse.Namespace, root: str | os.PathLike[str]) -> RunSpec:
    """Build the checked RunSpec (with ``sweep``) that the parsed arguments describe."""
    if not args.notebook:
        raise SpecError("nbscale sweep needs a notebook (or --resume SWEEP_ID).")
    absolute, relative = resolve_notebook_path(args.notebook, root)
    signature = inspect_notebook(absolute)
    data: dict[str, Any] = load_sweep_file(args.sweep_file) if args.sweep_file else {}  # relative to the caller's cwd
    fixed, tracking, sweep = split_sweep_file(data, what=f"sweep file {args.sweep_file}")
    space: dict[str, Any] = dict(sweep.get("space") or {})
    for item in args.sweep_params:
        name, value = parse_space_item(item)
        if isinstance(value, Domain):
            space[name] = value
            fixed.pop(name, None)
        else:
            fixed[name] = coerce_text(lookup_parameter(signature, name), value)
            space.pop(name, None)
    for item in args.parameters:
        name, value = split_assignment(item)
        fixed[name] = coerce_text(lookup_parameter(signature, name), value)
    sweep["space"] = space
    for dest, field in CLI_KEYS.items():
        if getattr(args, dest, None) is not None:
            sweep[field] = getattr(args, dest)
    if not space:
        raise SpecError("nothing to sweep: give at least one --param NAME=SPACE, e.g. --param 'n_estimators=randint(50, 400)'.")
    if "metric" not in sweep:
        raise SpecError("which metric decides? Add --metric NAME (a metric the notebook logs with mlflow.log_metric).")
    if "mode" not in sweep:
        raise SpecError(f"--metric {sweep['metric']}: {MODE_MISSING}.",
                        errors=[{"loc": ["sweep", "mode"], "msg": MODE_MISSING}])
    if args.experiment:
        tracking["experiment"] = args.experiment
    fields: dict[str, Any] = {"notebook": relative, "parameters": fixed, "tracking": tracking, "sweep": parse_sweep(sweep)}
    if args.pool:
        fields["resources"] = {"pool": args.pool}
    spec = parse_model(RunSpec, fields, what="sweep")
    return check_sweep(spec.model_copy(update={"parameters": _checked_fixed(spec, signature)}), signature)


def apply_sweep_file(spec: RunSpec, path: str | os.PathLike[str], *, root: str | os.PathLike[str] = ".") -> RunSpec:
    """``nbscale compile NOTEBOOK --sweep FILE``: add the file's sweep to a built RunSpec."""
    absolute, _ = resolve_notebook_path(spec.notebook, root)
    fixed, tracking, fields = split_sweep_file(load_sweep_file(path), what=f"sweep file {path}")
    sweep = parse_sweep(fields, what=f"sweep file {path}")
    given = {key: value for key, value in spec.tracking.model_dump().items() if value}  # the command line's win
    tracking = {**tracking, **given, "tags": {**(tracking.get("tags") or {}), **spec.tracking.tags}}
    merged = spec.model_copy(update={"parameters": {**spec.parameters, **fixed}, "sweep": sweep,
                                     "tracking": parse_model(TrackingSpec, tracking, what=f"sweep file {path}")})
    signature = inspect_notebook(absolute)
    return check_sweep(merged.model_copy(update={"parameters": _checked_fixed(merged, signature)}), signature)



def _checked_fixed(spec: RunSpec, signature: Any) -> dict[str, Any]:
    return check_parameters(spec.parameters, signature)
