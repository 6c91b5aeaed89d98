"""The http_request action against a real HTTP server on 127.0.0.1 (http_check's)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from schedules.validation import Errors, check_action_payload
from tests.workers.conftest import CTX, Answer
from workers.actions import PermanentError, TransientError, get_action


def call(url: str, **payload: Any) -> dict[str, Any]:
    spec = get_action("http_request")
    model = spec.payload_model.model_validate({"url": url, **payload})
    result = spec.func(CTX, model)
    assert isinstance(result, dict)
    return result


def test_a_post_sends_its_json_body_and_keeps_the_json_answer(service):
    url = service.answer("/migrations", Answer(201, {"id": "m-1", "status": "Starting"}))
    result = call(url, method="POST", body={"tables": ["a", "b"], "dry_run": False})
    assert result == {"status_code": 201, "json": {"id": "m-1", "status": "Starting"}}
    ((method, path, body),) = service.handler.calls
    assert (method, path, json.loads(body)) == (
        "POST",
        "/migrations",
        {"tables": ["a", "b"], "dry_run": False},
    )
    ((_, headers),) = service.handler.requests
    # The same key for every attempt of this step version: a service can drop a repeat.
    assert headers["Idempotency-Key"] == "step-7-v2"
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_every_method(service, method):
    url = service.answer("/thing", Answer(200, {"ok": True}))
    assert call(url, method=method)["json"] == {"ok": True}
    assert service.handler.calls[0][0] == method


def test_an_empty_or_text_answer(service):
    assert call(service.answer("/empty", Answer(204, b""))) == {"status_code": 204}
    text = call(service.answer("/text", Answer(200, "OK" + "x" * 2000)))
    assert text["status_code"] == 200 and text["text"].startswith("OKxx")
    assert len(text["text"]) == 1000


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(service, status):
    with pytest.raises(TransientError, match=f"answered {status}"):
        call(service.answer("/busy", Answer(status, b"later")), method="POST", body={})


def test_a_client_error_is_permanent_with_an_excerpt(service):
    with pytest.raises(PermanentError, match=r"answered 409.*already running"):
        call(service.answer("/conflict", Answer(409, b"already running")), method="POST")


def test_the_payload_rules(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["svc.internal"]
    errors = Errors()
    check_action_payload(errors, "http_request", {"url": "http://evil.example/x"})
    assert errors.by_field["payload"] == [
        "url: host 'evil.example' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"
    ]
    with pytest.raises(ValidationError, match="a GET sends no body"):
        get_action("http_request").payload_model.model_validate(
            {"url": "http://svc.internal/x", "body": {"a": 1}}
        )
    with pytest.raises(ValidationError, match="method"):
        get_action("http_request").payload_model.model_validate(
            {"url": "http://svc.internal/x", "method": "TRACE"}
        )
    assert get_action("http_request").has_side_effects  # a takeover is flagged uncertain
