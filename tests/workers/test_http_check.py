"""The http_check action against a real HTTP server on 127.0.0.1 (conftest's ``service``)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import ValidationError

from schedules.validation import Errors, check_action_payload
from tests.workers.conftest import CTX, Answer
from workers.actions import NotDone, PermanentError, TransientError, get_action
from workers.actions.http_check import HttpCheckPayload, http_check


def check(url: str, **payload: Any) -> dict[str, Any] | NotDone:
    spec = get_action("http_check")
    model = spec.payload_model.model_validate({"url": url, **payload})
    result = spec.func(CTX, model)
    assert result is not None
    return result


def test_it_is_a_polling_action_without_side_effects():
    spec = get_action("http_check")
    assert spec.polls is True and spec.has_side_effects is False


def test_done_when_the_field_equals_the_value(service):
    url = service.answer("/job/1", Answer(body={"status": "SUCCEEDED"}))
    assert check(url, field="status", equals="SUCCEEDED") == {
        "status_code": 200,
        "field": "status",
        "value": "SUCCEEDED",
        "done": True,
    }
    (_, headers), *_ = service.handler.requests
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize(
    ("path", "equals", "value"),
    [
        ("job.state", "done", "done"),
        ("items.1.state", True, True),
        ("items.0.count", 3, 3),
        ("job.error", None, None),
    ],
)
def test_nested_paths_and_list_indexes(service, path, equals, value):
    url = service.answer(
        "/status",
        Answer(
            body={
                "job": {"state": "done", "error": None},
                "items": [{"count": 3.0}, {"state": True}],
            }
        ),
    )
    result = check(url, field=path, equals=equals)
    assert isinstance(result, dict) and result["value"] == value and result["done"] is True


def test_not_done_while_the_field_differs_with_the_value_seen(service):
    url = service.answer("/job/1", Answer(body={"status": "RUNNING"}))
    result = check(url, field="status", equals="SUCCEEDED")
    assert result == NotDone(
        result={"status_code": 200, "field": "status", "value": "RUNNING", "done": False}
    )


@pytest.mark.parametrize(("seen", "equals"), [(1, True), ("1", 1), (True, "true"), (0, None)])
def test_json_types_are_not_mixed_up(service, seen, equals):
    url = service.answer("/flag", Answer(body={"flag": seen}))
    assert isinstance(check(url, field="flag", equals=equals), NotDone)


@pytest.mark.parametrize("path", ["job.state", "items.5.state", "items.x", "status.state"])
def test_a_missing_field_is_not_done_yet(service, path):
    url = service.answer("/job/1", Answer(body={"status": "QUEUED", "items": []}))
    result = check(url, field=path, equals="done")
    assert isinstance(result, NotDone) and result.result is not None
    assert result.result["value"] is None and result.result["missing"] is True
    assert result.result["done"] is False


def test_a_fail_on_value_fails_for_good(service):
    url = service.answer("/job/1", Answer(body={"status": "FAILED"}))
    with pytest.raises(PermanentError, match='status reported "FAILED"'):
        check(url, field="status", equals="SUCCEEDED", fail_on=["FAILED", "ABORTED"])


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_and_throttling_are_transient(service, status):
    url = service.answer("/job/1", Answer(status, b"busy"))
    with pytest.raises(TransientError, match=str(status)):
        check(url, field="status", equals="done")


def test_not_found_is_permanent_with_an_excerpt(service):
    url = service.answer("/gone", Answer(404, b"no such job " + b"x" * 1000))
    with pytest.raises(PermanentError, match="answered 404: no such job x") as caught:
        check(url, field="status", equals="done")
    assert len(str(caught.value)) < 400


def test_a_redirect_is_not_followed(service):
    target = service.answer("/inside", Answer(body={"status": "done"}))
    url = service.answer("/moved", Answer(302, headers={"Location": target}))
    with pytest.raises(PermanentError, match="answered 302"):
        check(url, field="status", equals="done")
    assert service.paths == ["/moved"]


@pytest.mark.parametrize("body", [b"<html>login</html>", b"", b'{"status": NaN}'])
def test_a_body_that_is_not_json_is_permanent(service, body):
    url = service.answer("/html", Answer(body=body))
    with pytest.raises(PermanentError, match="answered 200 without JSON"):
        check(url, field="status", equals="done")


@pytest.mark.parametrize("content_length", [True, False])
def test_a_body_over_the_limit_is_permanent(service, settings, content_length):
    settings.SCHEDULES_HTTP_CHECK_MAX_BYTES = 1000
    big = {"status": "done", "pad": "x" * 1000}
    url = service.answer("/big", Answer(body=big, content_length=content_length))
    with pytest.raises(PermanentError, match="more than 1000 bytes"):
        check(url, field="status", equals="done")
    small = service.answer("/small", Answer(body={"status": "done", "pad": "x" * 900}))
    assert isinstance(check(small, field="status", equals="done"), dict)


def test_a_slow_answer_is_transient(service, settings):
    settings.SCHEDULES_HTTP_CHECK_READ_TIMEOUT = 0.2
    url = service.answer("/slow", Answer(body={"status": "done"}, delay=1.0))
    with pytest.raises(TransientError, match="unreachable"):
        check(url, field="status", equals="done")


def test_an_unreachable_port_is_transient(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(TransientError, match="unreachable"):
        check(f"http://127.0.0.1:{port}/status", field="status", equals="done")


def test_no_proxy_is_taken_from_the_environment(service, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    url = service.answer("/job/1", Answer(body={"status": "done"}))
    assert isinstance(check(url, field="status", equals="done"), dict)


def test_headers_are_sent(service):
    url = service.answer("/job/1", Answer(body={"status": "done"}))
    check(url, field="status", equals="done", headers={"Authorization": "Bearer t"})
    (_, headers), *_ = service.handler.requests
    assert headers["Authorization"] == "Bearer t"


# --- the payload model: refused when the job is scheduled ---------------------------------------


def payload(**overrides: Any) -> dict[str, Any]:
    return {"url": "https://status.example.com/jobs/1", "field": "status", "equals": "done"} | (
        overrides
    )


@pytest.fixture
def allow_example(settings: Any) -> None:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["Status.Example.COM"]


def test_a_host_off_the_allowlist_is_refused_naming_host_and_setting(allow_example):
    with pytest.raises(ValidationError) as caught:
        HttpCheckPayload.model_validate(payload(url="http://169.254.169.254/latest/meta-data"))
    message = str(caught.value)
    assert "'169.254.169.254'" in message and "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS" in message


def test_the_scheduling_check_reports_the_refusal_on_the_payload(allow_example):
    errors = Errors()
    check_action_payload(errors, "http_check", payload(url="http://evil.test/"))
    assert errors.by_field == {
        "payload": ["url: host 'evil.test' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"]
    }


def test_an_empty_allowlist_refuses_every_url(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = []
    with pytest.raises(ValidationError, match="SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS is empty"):
        HttpCheckPayload.model_validate(payload())


def test_hosts_compare_case_insensitively(allow_example):
    model = HttpCheckPayload.model_validate(payload(url="https://STATUS.example.com/x"))
    assert model.url == "https://STATUS.example.com/x"


def test_a_host_removed_from_the_allowlist_is_refused_at_run_time(service, settings):
    url = service.answer("/job/1", Answer(body={"status": "done"}))
    model = HttpCheckPayload.model_validate({"url": url, "field": "status", "equals": "done"})
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["status.example.com"]
    with pytest.raises(PermanentError, match="not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS") as caught:
        http_check(CTX, model)
    assert "'127.0.0.1'" in str(caught.value)
    assert service.paths == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "ftp://status.example.com/x"}, "must be http or https, not ftp"),
        ({"url": "file:///etc/passwd"}, "must be http or https"),
        ({"url": "https://user:pw@status.example.com/"}, "must not contain credentials"),
        ({"url": "https://evil.test\\@status.example.com/"}, "backslashes"),
        ({"url": "https://status.example.com.evil.test/"}, "is not in"),
        ({"url": "https://status.example.com/" + "x" * 2000}, "at most 2000"),
        ({"headers": {"X-Token": "a\r\nHost: evil.test"}}, "must not contain CR or LF"),
        ({"headers": {"X-Bad\nName": "a"}}, "must not contain CR or LF"),
        ({"headers": {"host": "evil.test"}}, "Host header cannot be set"),
        ({"headers": {"X Space": "a"}}, "not a valid header name"),
        ({"headers": {f"X-{i}": "a" for i in range(21)}}, "at most 20"),
        ({"field": ""}, "at least 1 character"),
        ({"field": "job..state"}, "no empty part"),
        ({"field": "x" * 201}, "at most 200"),
        ({"equals": {"a": 1}}, "equals"),
        ({"equals": float("nan")}, "finite number"),
        ({"fail_on": ["done"]}, "must not also be listed in fail_on"),
        ({"fail_on": list(range(21))}, "at most 20"),
        ({"method": "POST"}, "Extra inputs are not permitted"),
    ],
)
def test_payloads_refused(allow_example, overrides, message):
    with pytest.raises(ValidationError, match=message):
        HttpCheckPayload.model_validate(payload(**overrides))


def test_equals_is_required_but_may_be_null(allow_example):
    without = payload()
    del without["equals"]
    with pytest.raises(ValidationError, match="equals"):
        HttpCheckPayload.model_validate(without)
    assert HttpCheckPayload.model_validate(payload(equals=None)).equals is None
