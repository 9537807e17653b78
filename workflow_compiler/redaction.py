"""Secrets out of text: the one function every error, record and log line passes through before it is kept or shown.

A tracking URI such as ``http://user:password@host/`` reached the run's error in ``runs.db``,
``log.txt``, ``result.json``, the output notebook and the CLI's output, through MLflow's own
messages. Two things keep it out. ``tracking_uri.credentials_out_of_uri`` moves a URI's password
into ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` for the processes nbscale starts,
so MLflow never sees it in a URI it may print. And ``redact`` removes, from any text, the userinfo
of every URI, the usual token forms (``Bearer …``, ``token=…``, ``password=…``) and the values of
the credential variables this process holds.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from types import TracebackType

MASK = "***"
#: Environment variables whose values are secrets wherever they appear in text.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "HF_TOKEN", "JUPYTERHUB_API_TOKEN")
_MIN_SECRET = 6  # shorter values would mask ordinary words

# Written here rather than with urllib.parse: the text is a message around the URI, not a URI.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"<>]+@")
_TOKEN_PARAMETER = re.compile(
    r"(?P<name>\b(?:access_token|id_token|refresh_token|token|api_key|apikey|password|passwd|pwd|secret|"
    r"client_secret|signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=)[^\s&'\"<>]+", re.IGNORECASE)
_AUTH_SCHEME = re.compile(r"(?P<name>\b(?:Bearer|Basic)\s+|\bAuthorization:\s*(?:token\s+)?)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"(?P<name>\b(?:" + "|".join(SECRET_VARIABLES) + r")=)\S+")


def redact(text: str) -> str:
    """``text`` without credentials: URIs' userinfo, tokens, and this process's secret variables' values."""
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _TOKEN_PARAMETER.sub(rf"\g<name>{MASK}", text)
    text = _AUTH_SCHEME.sub(rf"\g<name>{MASK}", text)
    text = _ASSIGNMENT.sub(rf"\g<name>{MASK}", text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_SECRET:
            text = text.replace(value, MASK)
    return text


class RedactingFormatter(logging.Formatter):
    """A log formatter whose every line, traceback included, goes through ``redact``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_logs() -> None:
    """Make every handler of the root logger, and the traceback of an exception no one caught, redact
    what they write (call after ``logging.basicConfig``, at a process's entry point)."""
    sys.excepthook = print_redacted_exception
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        formatter = RedactingFormatter(current._fmt if current else None, current.datefmt if current else None)
        handler.setFormatter(formatter)


def print_redacted_exception(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A ``sys.excepthook`` that prints the traceback through ``redact`` (an exception no handler caught)."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))
