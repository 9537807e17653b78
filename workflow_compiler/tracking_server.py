"""The first contact with an MLflow tracking server: an error in seconds that names the host.

MLflow retries a request 7 times with exponential back-off and waits up to 120 s for each
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``, read at every request), which
suits a server that is rate-limiting but leaves a user of a wrong or stopped server watching
urllib3's "Retrying" warnings for minutes. ``check_tracking_server`` asks once, with one retry and a
short connect timeout, through MLflow's own request code (so its TLS and auth settings apply); any
HTTP answer, even an error status, means a server is there. Later requests keep MLflow's patience.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from .errors import TrackingUnreachable
from .sweep.logs import logger_level

log = logging.getLogger(__name__)

#: Seconds to connect to the server (then up to READ_TIMEOUT_S for its answer), and retries of the first contact.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
FIRST_CONTACT_RETRIES = 1
#: Words for the usual causes, found in the text of the error requests raises (it keeps no typed cause).
_CAUSES = (("refused", "the connection was refused"), ("Name or service not known", "its host name does not resolve"),
           ("Temporary failure in name resolution", "its host name does not resolve"),
           ("nodename nor servname", "its host name does not resolve"), ("timed out", f"no answer within {CONNECT_TIMEOUT_S} s"),
           ("Timeout", f"no answer within {CONNECT_TIMEOUT_S} s"), ("SSL", "the TLS handshake failed"))


def server_address(uri: str) -> str:
    """``scheme://host[:port]`` of a tracking URI: no user, password, path or query."""
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number: MLflow would fail on it too
        port = None
    host = parsed.hostname or "?"
    return f"{parsed.scheme}://{host}{f':{port}' if port else ''}"


def check_tracking_server(uri: str) -> None:
    """Raise TrackingUnreachable, within seconds, when ``uri`` is an http(s) tracking server that does not answer."""
    if urlparse(uri).scheme not in ("http", "https"):
        return  # a file or database store: opening it says what is wrong
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        with logger_level("urllib3.connectionpool", logging.ERROR):  # no "Retrying" warning: the error below says it all
            http_request(get_default_host_creds(uri), "/health", "GET", max_retries=FIRST_CONTACT_RETRIES, backoff_factor=1,
                         backoff_jitter=0.0, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S), raise_on_status=False)
    except MlflowException as exc:
        where = server_address(uri)
        cause = next((words for text, words in _CAUSES if text in str(exc)), "no connection")
        log.debug("tracking server %s did not answer: %s", where, cause)  # not exc: its text holds the whole URI
        raise TrackingUnreachable(
            f"cannot reach the MLflow tracking server at {where}: {cause}. Check that it is running and that "
            "MLFLOW_TRACKING_URI names it, or unset MLFLOW_TRACKING_URI to track in nbscale's own store.", host=where) from None

