"""The REST bodies' one-pass parse accepts and refuses exactly what the two-step parse does, with the same words."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from hub_extension.handlers.base import json_object, parse_body, validation_errors
from hub_extension.schemas import AdmissionBody, PolicyBody, ReleaseBody
from workflow_compiler.errors import NbscaleError

OK = b'{"gpus": 1, "estimated_seconds": 60, "request_id": "r-1"}'


def _outcome(parse: object) -> tuple[str, object]:
    try:
        value = parse()  # type: ignore[operator]
    except ValidationError as exc:
        return "400 fields", validation_errors(exc)
    except NbscaleError as exc:
        return "400", str(exc)
    return "ok", value.model_dump()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("model", "raw"), [
    (AdmissionBody, OK),
    (AdmissionBody, b'{"gpus": "2", "estimated_seconds": 1.5, "request_id": "r-2", "pool": "a100", "label": "nb"}'),
    (AdmissionBody, b'{"gpus": 1.0, "estimated_seconds": 60, "request_id": "r-1", "ttl_seconds": null}'),
    (AdmissionBody, b'{"gpus": 1, "gpus": 3, "estimated_seconds": 60, "request_id": "r-1"}'),
    (AdmissionBody, b'{"gpus": 1, "estimated_seconds": 60, "request_id": "r-1", "user": "mallory"}'),
    (AdmissionBody, b'{"gpus": -1, "estimated_seconds": 0, "request_id": "bad id"}'),
    (AdmissionBody, b'{"gpus": 1, "estimated_seconds": NaN, "request_id": "r-1"}'),
    (AdmissionBody, b'{"gpus": 1, "estimated_seconds": Infinity, "request_id": "r-1"}'),
    (AdmissionBody, b'{"gpus": 1.5, "estimated_seconds": 60, "request_id": "r-1"}'),
    (AdmissionBody, b'{"gpus": true, "estimated_seconds": 60, "request_id": "r-1"}'),
    (AdmissionBody, b'{"gpus": 1, "estimated_seconds": 60, "request_id": "r-1", "label": "\\ud800"}'),
    (AdmissionBody, b'{"gpus": 1, "estimated_seconds": 60, "request_id": "r-1"'),
    (AdmissionBody, b"[1, 2]"),
    (AdmissionBody, b"\xff\xfe"),
    (AdmissionBody, b""),
    (ReleaseBody, b""),
    (ReleaseBody, b'{"gpu_seconds": 12.5}'),
    (ReleaseBody, b'{"gpu_seconds": -1}'),
    (ReleaseBody, b'"text"'),
    (PolicyBody, b'{"max_gpus": 4, "allowed_pools": ["default", "a100"]}'),
    (PolicyBody, b'{"allowed_pools": ["Not A Pool"]}'),
])
def test_one_pass_parse_matches_the_two_step_parse(model: type[BaseModel], raw: bytes) -> None:
    assert _outcome(lambda: parse_body(model, raw)) == _outcome(lambda: model.model_validate(json_object(raw)))


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "The body is not valid JSON: Expecting property name enclosed in double quotes (line 1)."),
    (b"[]", "The body must be a JSON object."),
])
def test_bad_json_keeps_its_message(raw: bytes, message: str) -> None:
    with pytest.raises(NbscaleError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        parse_body(AdmissionBody, raw)
