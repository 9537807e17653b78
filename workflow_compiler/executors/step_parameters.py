"""The local executor hands a step its parameters in a private file, not on its command line.

The compiled manifest passes each notebook parameter to ``nbscale-step run`` as an argument
(``--parameter NAME={{inputs.parameters.NAME}}``), which is right in a pod, where no other user
sees the process list. On a shared machine every local user sees a process's arguments (``ps``,
``/proc/<pid>/cmdline``), and Linux refuses one argument over 128 KiB ("Argument list too long").
So the local executor keeps the manifest's contract and moves those arguments, unchanged, into a
0600 file in the step's folder, passed as ``--parameters-file``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..private_files import private_folder, write_private

#: The step command whose ``--parameter`` options travel in a file.
STEP_COMMAND = "nbscale-step"
PARAMETERS_FILE = "parameters.json"


def parameters_through_file(argv: list[str], folder: Path) -> list[str]:
    """``argv`` with its ``--parameter NAME=JSON`` options moved into ``folder/parameters.json``
    (a JSON list of those ``NAME=JSON`` texts, mode 0600) and ``--parameters-file`` naming it.

    Any command other than ``nbscale-step run`` with parameters is returned as it is.
    """
    if len(argv) < 2 or Path(argv[0]).name != STEP_COMMAND or argv[1] != "run":
        return argv
    kept: list[str] = []
    values: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--parameter":
            value = next(rest, None)
            if value is None:  # argparse reports the missing value, as it would have
                kept.append(arg)
            else:
                values.append(value)
        elif arg.startswith("--parameter="):
            values.append(arg.partition("=")[2])
        else:
            kept.append(arg)
    if not values:
        return argv
    path = private_folder(folder) / PARAMETERS_FILE
    write_private(path, json.dumps(values, ensure_ascii=False).encode("utf-8"))
    return [*kept, "--parameters-file", str(path)]
