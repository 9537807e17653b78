"""The sweep driver turns off Ray's multi-node flag so Ray binds to 127.0.0.1; a Ray without that flag is logged, not passed over."""

from __future__ import annotations

import logging

import pytest


def test_the_flag_is_turned_off_in_the_drivers_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray._private import ray_constants

    from workflow_compiler.sweep import ray_connect

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_connect._keep_to_loopback()
    assert ray_constants.ENABLE_RAY_CLUSTER is False


def test_a_ray_without_the_flag_is_warned_of_with_its_version(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import ray
    from ray._private import ray_constants

    from workflow_compiler.sweep import ray_connect

    monkeypatch.delattr(ray_constants, "ENABLE_RAY_CLUSTER")
    with caplog.at_level(logging.WARNING, logger=ray_connect.__name__):
        ray_connect._keep_to_loopback()
    assert not hasattr(ray_constants, "ENABLE_RAY_CLUSTER")  # not set back silently under the old name
    [record] = [r for r in caplog.records if r.name == ray_connect.__name__]
    assert record.levelno == logging.WARNING
    assert f"Ray {ray.__version__} has no ray_constants.ENABLE_RAY_CLUSTER" in record.getMessage()
