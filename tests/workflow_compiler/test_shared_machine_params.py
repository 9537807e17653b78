"""No parameter on a command line: the local executor hands a step its values in a private file (issue 18, item 3).

Every local user can read every process's arguments (``ps``, ``/proc/<pid>/cmdline``), and Linux
refuses a single argument over 128 KiB (values are capped at 64 KiB by limits.py, but a run's
parameters together may be 1 MiB). A run is started through the Python API (the CLI's own
``-p`` is the user's own command line), and every process's command line is read while it runs.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from workflow_compiler.executors import get_executor
from workflow_compiler.executors.step_parameters import parameters_through_file
from workflow_compiler.limits import MAX_VALUE_BYTES
from workflow_compiler.spec import build_run_spec
from workflow_compiler.submit import submit

NOTEBOOKS = Path(__file__).parent / "notebooks"


def _command_lines() -> list[bytes]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes())
            except OSError:  # ended meanwhile
                pass
    return lines


def test_a_secret_parameter_of_the_largest_allowed_size_runs_and_never_reaches_a_command_line(tmp_path: Path) -> None:
    # Values are capped at MAX_VALUE_BYTES (limits.py: larger data travels as a file path); the
    # largest one still has to stay off every command line and arrive byte for byte.
    shutil.copy(NOTEBOOKS / "echo.ipynb", tmp_path / "echo.ipynb")
    secret = f"s3cret-{uuid.uuid4().hex}"
    value = secret + "x" * (MAX_VALUE_BYTES - len(secret) - 2)  # JSON adds the two quotes
    spec = build_run_spec("echo.ipynb", root=tmp_path, parameters={"text": value}, outputs={"html": False})
    seen: list[bytes] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.extend(line for line in _command_lines() if secret.encode() in line)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, name="ps")
    watcher.start()
    try:
        record = submit(spec, root=tmp_path)
        record = get_executor("local", root=tmp_path).wait(record.id, timeout=600)
    finally:
        done.set()
        watcher.join()
    assert record.status == "SUCCEEDED", record.error
    assert (tmp_path / "received-text.bin").read_bytes() == value.encode()  # byte for byte
    assert seen == []
    step_dir = Path(record.run_dir) / "steps" / "notebook"
    assert (step_dir / "parameters.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("argv", "moved", "values"), [
    (["nbscale-step", "run", "--config", "{}", "--parameter", 'a="x y"', "--parameter=b=2", "--output-dir", "/o"],
     ["nbscale-step", "run", "--config", "{}", "--output-dir", "/o"], ['a="x y"', "b=2"]),
    (["/venv/bin/nbscale-step", "run", "--parameter", "c=[1]"], ["/venv/bin/nbscale-step", "run"], ["c=[1]"]),
    (["nbscale-step", "run", "--config", "{}"], None, None),  # nothing to move
    (["nbscale-step", "open-parent", "--config", "{}"], None, None),  # not a run
    (["other", "run", "--parameter", "a=1"], None, None),  # not the step
    (["nbscale-step", "run", "--parameter"], None, None),  # argparse says what is missing
], ids=["run", "by-path", "no-parameters", "open-parent", "other-command", "missing-value"])
def test_only_a_steps_parameters_move_into_the_file(tmp_path: Path, argv: list[str], moved: list[str] | None,
                                                    values: list[str] | None) -> None:
    result = parameters_through_file(argv, tmp_path / "step")
    if moved is None:
        assert result == argv and not (tmp_path / "step").exists()
        return
    path = tmp_path / "step" / "parameters.json"
    assert result == [*moved, "--parameters-file", str(path)]
    assert json.loads(path.read_text()) == values
