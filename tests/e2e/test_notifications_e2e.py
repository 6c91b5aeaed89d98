"""Alerts end to end on the embedded default: a job fails in a real worker; its alerts go
out from the same worker as separate tasks (folder broker), and a hanging webhook neither
fails nor delays the job."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import DeliveryStatus, NotificationDelivery, PlanStatus, Run, RunStatus

from .conftest import RecordingService, start_stack

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret-0123456789abcdef0123456789"


class Service(BaseHTTPRequestHandler):
    """/fail refuses the job's request; /global takes alerts; /slow hangs past the timeout."""

    calls: list[tuple[float, str, dict[str, str], bytes]] = []

    def do_GET(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Service.calls.append((time.time(), self.path, dict(self.headers), body))
        if self.path == "/slow":
            time.sleep(4)
        status = 400 if self.path == "/fail" else 200
        reply = b'{"error": "no such widget"}' if status == 400 else b"{}"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the notifier gave up waiting, as it should

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Service.calls = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def wait_for(what: str, check: Any, timeout: float, logs: Any) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} after {timeout} s:\n{logs()}")


def test_a_failed_job_alerts_by_mail_and_webhooks_from_the_worker(
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
    service: str,
    settings: Any,
) -> None:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="filesystem://",
        queue=f"e2e-{uuid.uuid4().hex[:8]}",
        ADMINS="Ops <ops@example.com>",
        SCHEDULES_NOTIFY_MAIL="admins",
        SCHEDULES_NOTIFY_WEBHOOK_URL=f"{service}/global",
        SCHEDULES_NOTIFY_WEBHOOK_SECRET=SECRET,
        SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT="1",
        SCHEDULES_NOTIFY_MAX_ATTEMPTS="2",
        SCHEDULES_NOTIFY_RETRY_BASE="0.5",
        SCHEDULES_NOTIFY_RETRY_MAX="1",
    )
    try:
        job = services.job_schedule(
            action="http_request",
            payload={"url": f"{service}/fail"},
            due_at=timezone.now() + dt.timedelta(seconds=1),
            max_attempts=1,
            name="widget sync",
            webhook_url=f"{service}/slow",
        )
        wait_for(
            "the job did not fail",
            lambda: Run.objects.filter(job=job, status=RunStatus.FAILED).exists(),
            30,
            stack.logs,
        )
        run = Run.objects.get(job=job)
        job.refresh_from_db()
        assert job.status == PlanStatus.FAILED
        assert "answered 400" in run.error
        assert run.finished_at is not None
        assert run.finished_at - run.started_at < dt.timedelta(seconds=1)

        wait_for(
            "the deliveries did not end",
            lambda: (
                NotificationDelivery.objects.count() == 3
                and not NotificationDelivery.objects.filter(status=DeliveryStatus.PENDING).exists()
            ),
            40,
            stack.logs,
        )
        rows = {d.target: d for d in NotificationDelivery.objects.all()}
        assert set(rows) == {"admins", f"{service}/global", f"{service}/slow"}
        assert {d.run_id for d in rows.values()} == {run.pk}

        mailed = rows["admins"]
        assert (mailed.status, mailed.attempts) == ("sent", 1), mailed.last_error
        [message] = stack.mail()
        text = message.read_text()
        assert "To: ops@example.com" in text
        assert f"Subject: [schedules] Job {job.pk} (widget sync) failed" in text

        hooked = rows[f"{service}/global"]
        assert (hooked.status, hooked.response_status) == ("sent", 200)
        [(_, _, headers, body)] = [c for c in Service.calls if c[1] == "/global"]
        timestamp = headers["X-Schedules-Timestamp"]
        expected = hmac.new(
            SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Schedules-Signature"] == f"sha256={expected}"
        sent = json.loads(body)
        assert sent["event"] == "job_failed" and sent["job"]["id"] == job.pk
        assert sent["run"]["status"] == "failed" and "answered 400" in sent["run"]["error"]

        slow = rows[f"{service}/slow"]
        assert (slow.status, slow.attempts) == ("failed", 2)
        assert "gave up after 2 attempts" in slow.last_error
        assert "timed out" in slow.last_error
        # The hanging webhook was first called only after the run was recorded: the job
        # never waited on it.
        first_slow = min(at for at, path, _, _ in Service.calls if path == "/slow")
        assert first_slow >= run.finished_at.timestamp()
    finally:
        stack.stop()
