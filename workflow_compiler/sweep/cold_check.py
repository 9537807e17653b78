"""A sweep command's usage errors answered in the client while a cold warm driver starts (issue 19).

When no warm sweep driver answers, the client starts one (``launch_daemon`` returns once it has
bound its socket, before its ~4 s of imports) and, meanwhile, runs the command's own parse and
spec building (``precheck``: the same functions the driver's child runs, never a copy). A refused
sweep prints its message and exits 2 there and then; the driver goes on starting and then idles.
Anything else (a valid sweep, an unexpected error) goes to the driver as before, so its child
alone prints what the command prints. With the driver already up, nothing of this runs.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable

from ..errors import NbscaleError

log = logging.getLogger(__name__)

#: A precheck returns None to go on, or how to refuse: a function that prints the message and returns the exit code.
Refusal = Callable[[], int]
Precheck = Callable[[], "Refusal | None"]


def refusal(check: Callable[[], object], refuse: Callable[[NbscaleError], int]) -> Refusal | None:
    """Run ``check`` (the command's own parse and spec building); None when it passes, else how the command refuses.

    Any ``NbscaleError`` refuses, printed and ended by ``refuse`` with the code the command's child gives it: the
    ``nbscale`` CLI and ``python -m workflow_compiler.sweep`` share this, each with its own ``refuse``.
    """
    try:
        check()
    except NbscaleError as exc:
        return functools.partial(refuse, exc)
    return None


def refused_while_starting(precheck: Precheck) -> int | None:
    """Run ``precheck``; the exit code when it refused the command (its message printed), else None (nothing shown).

    Warnings (nbformat's about a notebook's cell ids...) are held: on a refusal they are shown as the
    command would have shown them before its error; otherwise the driver's child shows them itself.
    """
    with warnings.catch_warnings(record=True) as held:
        try:
            refusal = precheck()
        except Exception as exc:  # noqa: BLE001 - not a usage error: the driver's child meets it again and reports it
            log.debug("the early check of a sweep command failed; the driver runs it: %r", exc)
            return None
    if refusal is None:
        return None
    for item in held:  # through the caller's filters and showwarning again, as when they were first issued
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno, source=item.source)
    return refusal()
