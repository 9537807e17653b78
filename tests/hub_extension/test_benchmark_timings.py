"""The service's own timings for ``benchmarks.quota_admission``, and the interpreter settings it serves with."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from unittest import mock

from tornado.httputil import HTTPServerRequest
from tornado.web import Application

from hub_extension.app import GIL_SWITCH_INTERVAL_S, prepare_interpreter_for_serving
from hub_extension.handlers.base import QuotaHandler
from hub_extension.handlers.benchmark import ServiceTimings


def test_timings_see_the_event_loops_busy_stretches_and_gc_pauses_and_start_anew() -> None:
    timings = ServiceTimings()
    loop = asyncio.new_event_loop()
    try:
        timings.install(loop)

        def busy() -> None:
            time.sleep(0.03)  # holds the loop as a slow handler would
            gc.collect()

        loop.call_soon(busy)
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        gc.callbacks.remove(timings._on_gc)
        loop.close()
    figures = timings.take()
    assert figures["event_loop_busy_ms"]["max_ms"] >= 30
    assert figures["gc_pause_ms"]["generation_2"]["count"] >= 1
    again = timings.take()
    assert again["event_loop_busy_ms"] == {"count": 0} and again["gc_pause_ms"]["generation_2"] == {"count": 0}
    assert again["request_ms"] == again["decision_wait_ms"] == {"count": 0}


def test_handlers_record_their_request_time_only_when_the_benchmark_timings_are_on() -> None:
    timings = ServiceTimings()
    for settings, recorded in (({}, 0), ({"benchmark_timings": timings}, 1)):
        request = HTTPServerRequest(method="GET", uri="/api/v1/me", connection=mock.Mock())
        QuotaHandler(Application(**settings), request, store=mock.Mock()).on_finish()
        assert len(timings.requests) == recorded


def test_serving_freezes_the_start_up_heap_and_shares_the_gil_finely() -> None:
    assert gc.get_freeze_count() == 0
    interval = sys.getswitchinterval()
    try:
        prepare_interpreter_for_serving()
        assert gc.get_freeze_count() > 1000  # pytest's and the service's modules alone
        assert gc.get_count()[0] < 100
        assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S < interval
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
