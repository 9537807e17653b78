"""The service's access check is remembered per hub answer, never longer than HubOAuth keeps that answer."""

from __future__ import annotations

from typing import Any

import pytest
from jupyterhub.services.auth import UserNotAllowed

from hub_extension.handlers.base import AllowedModels


class Checker:
    """Stands for jupyterhub's check_hub_user: allows models holding the service's access scope."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if "access:services!service=nbscale-quotas" not in model["scopes"]:
            raise UserNotAllowed(model)
        return model


def _model(*scopes: str) -> dict[str, Any]:
    return {"kind": "user", "name": "alice", "scopes": list(scopes)}


def test_the_same_answer_is_checked_once() -> None:
    allowed, check = AllowedModels(), Checker()
    model = _model("access:services!service=nbscale-quotas")
    assert [allowed.check(model, check) for _ in range(5)] == [model] * 5
    assert check.calls == 1


def test_a_new_answer_from_the_hub_is_checked_again_and_may_be_refused() -> None:
    allowed, check = AllowedModels(), Checker()
    allowed.check(_model("access:services!service=nbscale-quotas"), check)
    # HubOAuth's cache expired and the hub now answers without the scope (a new dict, equal name)
    with pytest.raises(UserNotAllowed):
        allowed.check(_model(), check)
    assert check.calls == 2


@pytest.mark.parametrize("times", [1, 3])
def test_a_refusal_is_never_remembered(times: int) -> None:
    allowed, check = AllowedModels(), Checker()
    model = _model()
    for _ in range(times):
        with pytest.raises(UserNotAllowed):
            allowed.check(model, check)
    assert check.calls == times


def test_the_memory_is_bounded() -> None:
    allowed, check = AllowedModels(size=3), Checker()
    models = [_model("access:services!service=nbscale-quotas") for _ in range(7)]
    for model in models:
        allowed.check(model, check)
    assert len(allowed._allowed) <= 3
    allowed.check(models[-1], check)
    assert check.calls == 7  # the newest is still remembered
