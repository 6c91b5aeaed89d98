"""Actions and their backends: email through Django, recording over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from workers.actions import ActionContext, PermanentError, TransientError, get_action
from workers.actions.email import EmailPayload, build_message
from workers.backends.recording import HttpRecordingBackend, get_recording_backend

CTX = ActionContext(
    step_id=7, version=2, attempt=1, due_at=timezone.now(), job_id=1, classroom_id=None
)


def test_send_email_with_text_and_html():
    spec = get_action("send_email")
    payload = spec.payload_model.model_validate(
        {
            "to": ["a@example.com"],
            "cc": ["b@example.com"],
            "subject": "Hi",
            "body": "Text",
            "html_body": "<b>Html</b>",
        }
    )
    result = spec.func(CTX, payload)
    assert result == {"sent": 1, "recipients": 2}
    message = mail.outbox[-1]
    assert message.body == "Text" and message.alternatives[0][0] == "<b>Html</b>"
    assert message.extra_headers["X-Schedules-Step"] == "step-7-v2"


def test_send_email_from_a_template():
    payload = EmailPayload.model_validate(
        {
            "to": ["a@example.com"],
            "subject": "Reminder",
            "template": "reminder",
            "context": {"name": "Ada", "what": "class at nine"},
        }
    )
    message = build_message(payload)
    assert "Hello Ada" in message.body and "class at nine" in message.body
    assert "<strong>class at nine</strong>" in message.alternatives[0][0]


def test_template_names_cannot_escape_the_email_folder():
    with pytest.raises(ValueError, match="lowercase letters"):
        EmailPayload.model_validate(
            {"to": ["a@example.com"], "subject": "x", "template": "../admin/base"}
        )


def test_embedded_default_writes_mail_to_files(settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    spec = get_action("send_email")
    spec.func(
        CTX,
        spec.payload_model.model_validate(
            {"to": ["a@example.com"], "subject": "Filed", "body": "x"}
        ),
    )
    (written,) = tmp_path.iterdir()
    assert "Subject: Filed" in written.read_text()


class RecordingService(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any], str]] = []
    status = 200

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RecordingService.received.append((self.path, body, self.headers["Idempotency-Key"]))
        self.send_response(RecordingService.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recording_service(settings) -> Iterator[type[RecordingService]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    RecordingService.received = []
    RecordingService.status = 200
    settings.SCHEDULES_RECORDING_BACKEND = "http"
    settings.SCHEDULES_RECORDING_URL = f"http://127.0.0.1:{server.server_port}/"
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = ["127.0.0.1"]
    get_recording_backend.cache_clear()
    yield RecordingService
    server.shutdown()
    get_recording_backend.cache_clear()


def run_recording(action: str) -> Any:
    spec = get_action(action)
    payload = spec.payload_model.model_validate(
        {"recording_service_ref": "room-1", "classroom_id": 3}
    )
    return spec.func(CTX, payload)


def test_http_backend_posts_json_with_an_idempotency_key(recording_service):
    assert run_recording("start_recording") == {"status": 200, "response": {"ok": True}}
    run_recording("live_ping")
    run_recording("stop_recording")
    paths = [p for p, _, _ in recording_service.received]
    assert paths == ["/recordings/start", "/recordings/ping", "/recordings/stop"]
    _, body, key = recording_service.received[0]
    assert body["recording_service_ref"] == "room-1" and body["classroom_id"] == 3
    assert key == "step-7-v2"


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, TransientError), (429, TransientError), (404, PermanentError), (302, PermanentError)],
)
def test_http_backend_classifies_errors(recording_service, status, error):
    recording_service.status = status
    with pytest.raises(error):
        run_recording("start_recording")


def test_http_backend_unreachable_is_transient(settings):
    settings.SCHEDULES_RECORDING_URL = "http://127.0.0.1:9/"  # discard port: refused
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = ["127.0.0.1"]
    with pytest.raises(TransientError, match="unreachable"):
        HttpRecordingBackend().start({"recording_service_ref": "x"})


@pytest.mark.parametrize(
    ("url", "allowed", "message"),
    [
        ("http://169.254.169.254/", ["recorder.example.com"], "is not in"),
        ("file:///etc/passwd", ["recorder.example.com"], "must be http"),
        ("http://recorder.example.com.evil.test/", ["recorder.example.com"], "is not in"),
    ],
)
def test_http_backend_refuses_hosts_off_the_allowlist(settings, url, allowed, message):
    settings.SCHEDULES_RECORDING_URL = url
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = allowed
    with pytest.raises(ImproperlyConfigured, match=message):
        HttpRecordingBackend()


def test_unknown_backend_suggests_the_nearest(settings):
    settings.SCHEDULES_RECORDING_BACKEND = "loging"
    get_recording_backend.cache_clear()
    try:
        with pytest.raises(ImproperlyConfigured, match="Did you mean 'logging'"):
            get_recording_backend()
    finally:
        get_recording_backend.cache_clear()


def test_due_at_is_passed_to_the_backend(recording_service):
    run_recording("live_ping")
    assert dt.datetime.fromisoformat(recording_service.received[0][1]["due_at"]) == CTX.due_at
