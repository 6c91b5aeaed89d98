"""Alerts (docs/alerts.md): signals become delivery rows; mail and signed webhooks are sent
by a task with retries and backoff; the SSRF guard; a notifier never fails or delays a job."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone

from schedules import services
from schedules.models import (
    DeliveryStatus,
    ExecutionStatus,
    Job,
    NotificationDelivery,
    PlanStatus,
    Run,
    RunStatus,
)
from schedules.notifications import checks, receivers
from schedules.notifications import services as notify
from schedules.notifications.webhook import signature
from tests.api.conftest import client_for
from workers.actions import PermanentError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

SECRET = "test-secret-0123456789abcdef0123456789"
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


# --- A webhook receiver on 127.0.0.1 --------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class HookHandler(BaseHTTPRequestHandler):
    """Answers each path by its script ((status, delay) in turn, the last one repeated)."""

    script: dict[str, list[tuple[int, float]]] = {}
    received: list[Received] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        HookHandler.received.append(Received(self.path, dict(self.headers), body, time.time()))
        answers = HookHandler.script.get(self.path, [(200, 0.0)])
        status, delay = answers.pop(0) if len(answers) > 1 else answers[0]
        time.sleep(delay)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://169.254.169.254/")
            reply = b"ok" if status < 300 else b"nope, not today"
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class Hook:
    base: str
    received: list[Received] = field(default_factory=list)

    def url(self, path: str, *answers: tuple[int, float]) -> str:
        if answers:
            HookHandler.script[path] = list(answers)
        return f"{self.base}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in HookHandler.received if r.path == path]


@pytest.fixture
def hook(settings: Any) -> Iterator[Hook]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HookHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    HookHandler.script = {}
    HookHandler.received = []
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.SCHEDULES_NOTIFY_WEBHOOK_SECRET = SECRET
    settings.SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT = 2.0
    yield Hook(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    server.server_close()


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The delivery ids handed to the broker (after the commit), instead of a broker."""
    ids: list[int] = []
    monkeypatch.setattr(notify, "_publish", ids.extend)
    return ids


@pytest.fixture
def failing_action() -> Iterator[None]:
    @register("alert_boom", payload=NoopPayload, description="test: always fails for good")
    def alert_boom(ctx: Any, payload: Any) -> None:
        raise PermanentError("the widget broke\nTraceback: more lines")

    yield
    REGISTRY.pop("alert_boom")


@pytest.fixture
def admins(settings: Any) -> None:
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.MANAGERS = [("Boss", "boss@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def fail_a_job(**job: Any) -> tuple[Job, Run]:
    """Schedule the failing action now and run it through the worker's path."""
    created = services.job_schedule(
        action="alert_boom", due_at=timezone.now(), max_attempts=1, name="nightly", **job
    )
    step = created.steps.get()
    # The worker's path for a run_steps message: claim, run, record (then the signals).
    assert services.steps_execute(pairs=[[step.pk, step.version]], worker="test:1") == []
    created.refresh_from_db()
    return created, Run.objects.get(step=step)


def verify(received: Received, *, secret: str = SECRET, tolerance: float = 300) -> dict[str, Any]:
    """What a receiver does (docs/alerts.md): check the timestamp and the signature."""
    timestamp = received.headers["X-Schedules-Timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    given = received.headers["X-Schedules-Signature"]
    assert hmac.compare_digest(given, f"sha256={expected}")
    body: dict[str, Any] = json.loads(received.body)
    return body


# --- Receivers write one row per notifier and target ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_failed_job_writes_a_delivery_per_notifier_and_target_and_queues_them(
    settings, hook, queued, failing_action, admins
):
    settings.SCHEDULES_NOTIFY_MAIL = ["admins", "managers"]
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/global")
    job, run = fail_a_job(webhook_url=f"  {hook.url('/job')}  ")

    assert run.status == RunStatus.FAILED and job.status == PlanStatus.FAILED
    assert job.webhook_url == hook.url("/job")  # stored stripped
    rows = NotificationDelivery.objects.order_by("pk")
    assert [(d.event, d.notifier, d.target) for d in rows] == [
        ("job_failed", "mail", "admins"),
        ("job_failed", "mail", "managers"),
        ("job_failed", "webhook", hook.url("/global")),
        ("job_failed", "webhook", hook.url("/job")),
    ]
    assert {(d.job_id, d.run_id, d.status, d.attempts) for d in rows} == {
        (job.pk, run.pk, DeliveryStatus.PENDING, 0)
    }
    assert queued == [d.pk for d in rows]  # one task per row, after the commit
    payload = rows[0].payload
    assert payload["job"]["name"] == "nightly"
    assert payload["run"]["error"] == "PermanentError: the widget broke"
    assert hook.received == []  # nothing is sent by the worker's record path itself


@pytest.mark.django_db(transaction=True)
def test_the_same_webhook_for_the_job_and_globally_is_one_delivery(
    settings, hook, queued, failing_action
):
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/hook")
    fail_a_job(webhook_url=hook.url("/hook"))
    assert NotificationDelivery.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_nothing_is_written_without_a_notifier_or_for_an_event_left_out(
    settings, hook, queued, failing_action, admins
):
    fail_a_job()  # no mail, no webhook configured, none on the job
    assert not NotificationDelivery.objects.exists()

    settings.SCHEDULES_NOTIFY_MAIL = ["admins"]
    settings.SCHEDULES_NOTIFY_EVENTS = ["run_uncertain"]
    fail_a_job(webhook_url=hook.url("/job"))
    assert not NotificationDelivery.objects.exists() and queued == []


@pytest.mark.django_db(transaction=True)
def test_run_finished_goes_to_webhooks_only_when_enabled(settings, hook, queued, admins):
    settings.SCHEDULES_NOTIFY_EVENTS = ["run_finished"]
    settings.SCHEDULES_NOTIFY_MAIL = ["admins"]  # mail is for failures only
    job = services.job_schedule(action="noop", due_at=timezone.now(), webhook_url=hook.url("/j"))
    step = job.steps.get()
    assert services.steps_execute(pairs=[[step.pk, step.version]], worker="test:1") == []
    run = Run.objects.get(step=step)
    [delivery] = NotificationDelivery.objects.all()
    assert (delivery.event, delivery.notifier, delivery.run_id) == (
        "run_finished",
        "webhook",
        run.pk,
    )
    assert delivery.payload["run"]["status"] == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_an_uncertain_run_is_alerted(settings, hook, queued):
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/global")
    job = services.job_schedule(action="noop", due_at=timezone.now())
    step = job.steps.get()
    run = Run.objects.create(
        step=step,
        job=job,
        action="noop",
        version=step.version,
        attempt=2,
        status=RunStatus.SUCCEEDED,
        due_at=step.due_at,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        uncertain=True,
    )
    receivers.on_run_uncertain(Run, run=run)
    [delivery] = NotificationDelivery.objects.all()
    assert delivery.event == "run_uncertain" and delivery.job_id == job.pk
    assert "may have had its effect twice" in delivery.payload["summary"]
    assert delivery.payload["run"]["uncertain"] is True


@pytest.mark.django_db(transaction=True)
def test_a_failed_workflow_execution_is_alerted(settings, hook, queued):
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/global")
    workflow = services.workflow_create(
        name="migrate",
        definition={
            "StartAt": "Stop",
            "States": {"Stop": {"Type": "Fail", "Error": "OutOfSync", "Cause": "versions differ"}},
        },
    )
    execution = services.execution_start(workflow=workflow).execution
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    [delivery] = NotificationDelivery.objects.all()
    assert (delivery.event, delivery.execution_id) == ("execution_failed", execution.pk)
    facts = delivery.payload["execution"]
    assert facts["workflow"] == "migrate" and facts["state_name"] == "Stop"
    assert facts["error"] == "OutOfSync" and facts["cause"] == "versions differ"
    assert facts["admin_url"] == f"/admin/schedules/execution/{execution.pk}/change/"


# --- Mail through Django's email backend ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_mail_goes_to_the_admins_through_the_email_backend(
    settings, queued, failing_action, admins
):
    settings.SCHEDULES_NOTIFY_MAIL = ["admins"]
    settings.SCHEDULES_NOTIFY_BASE_URL = "https://scheduler.example.com"
    job, run = fail_a_job()
    [delivery] = NotificationDelivery.objects.all()

    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject == (
        f"[schedules] Job {job.pk} (nightly) failed: PermanentError: the widget broke"
    )
    assert f"https://scheduler.example.com/admin/schedules/job/{job.pk}/change/" in message.body
    assert f"run.id: {run.pk}" in message.body and "run.status: failed" in message.body
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 1, "")
    assert delivery.sent_at is not None
    # A second delivery of the same task message sends nothing more.
    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=True)
def test_mail_to_nobody_fails_at_once_naming_the_setting(settings, queued, failing_action, admins):
    settings.SCHEDULES_NOTIFY_MAIL = ["admins"]
    settings.ADMINS = []
    fail_a_job()
    [delivery] = NotificationDelivery.objects.all()
    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1
    assert "ADMINS is empty" in delivery.last_error
    assert mail.outbox == []


# --- Webhooks: signed JSON, retries with backoff, the SSRF guard ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_webhook_gets_signed_json_a_receiver_can_verify(settings, hook, queued, failing_action):
    job, run = fail_a_job(webhook_url=hook.url("/job"))
    [delivery] = NotificationDelivery.objects.all()
    before = time.time()
    assert notify.notification_deliver(delivery_id=delivery.pk) is None

    [received] = hook.to("/job")
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Schedules-Event"] == "job_failed"
    assert received.headers["X-Schedules-Delivery"] == str(delivery.pk)
    assert int(received.headers["X-Schedules-Timestamp"]) >= int(before)
    body = verify(received)
    assert body["event"] == "job_failed" and body["delivery_id"] == delivery.pk
    assert body["attempt"] == 1
    assert dt.datetime.fromisoformat(body["occurred_at"]) <= timezone.now()
    assert body["admin_url"] == f"/admin/schedules/job/{job.pk}/change/"
    assert body["job"] == {
        "id": job.pk,
        "name": "nightly",
        "action": "alert_boom",
        "status": "failed",
        "schedule_type": "once",
        "max_attempts": 1,
        "admin_url": f"/admin/schedules/job/{job.pk}/change/",
    }
    facts = body["run"]
    assert facts["id"] == run.pk and facts["status"] == "failed" and facts["attempt"] == 1
    assert facts["error"] == "PermanentError: the widget broke"  # the first line only
    assert facts["due_at"] == run.due_at.isoformat().replace("+00:00", "Z")
    assert facts["lateness_seconds"] == pytest.approx(run.lateness.total_seconds())
    assert "payload" not in body["job"] and "result" not in facts  # never the job's data

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 1, 200)

    # A forged or replayed request fails the same check.
    with pytest.raises(AssertionError):
        verify(received, secret="not-the-secret")
    stale = Received(received.path, {**received.headers}, received.body, received.at)
    stale.headers["X-Schedules-Timestamp"] = str(int(before) - 3600)
    with pytest.raises(AssertionError):
        verify(stale)


def test_the_signature_covers_the_timestamp_and_the_body():
    one = signature("k", "1700000000", b'{"a":1}')
    assert one == "sha256=" + hmac.new(b"k", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert signature("k", "1700000001", b'{"a":1}') != one
    assert signature("k", "1700000000", b'{"a":2}') != one


@pytest.mark.django_db(transaction=True)
def test_retries_back_off_on_the_row_until_the_last_attempt_fails(
    settings, hook, queued, failing_action
):
    settings.SCHEDULES_NOTIFY_MAX_ATTEMPTS = 3
    settings.SCHEDULES_NOTIFY_RETRY_BASE = 10
    settings.SCHEDULES_NOTIFY_RETRY_MAX = 1000
    fail_a_job(webhook_url=hook.url("/down", (503, 0.0)))
    [delivery] = NotificationDelivery.objects.all()

    for attempt, (low, high) in enumerate([(5, 10), (10, 20)], start=1):
        now = timezone.now()
        delay = notify.notification_deliver(delivery_id=delivery.pk)
        assert delay is not None and low <= delay <= high
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.response_status) == (
            "pending",
            attempt,
            503,
        )
        assert "answered 503: nope, not today" in delivery.last_error
        assert delivery.next_attempt_at is not None
        wait = (delivery.next_attempt_at - now).total_seconds()
        assert low <= wait <= high + 1

    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_error.startswith("gave up after 3 attempts:")
    assert delivery.next_attempt_at is None and delivery.sent_at is None
    assert [verify(r)["attempt"] for r in hook.to("/down")] == [1, 2, 3]
    assert notify.notification_deliver(delivery_id=delivery.pk) is None  # nothing more
    assert len(hook.to("/down")) == 3


def test_the_backoff_grows_and_is_capped(settings):
    settings.SCHEDULES_NOTIFY_RETRY_BASE = 2
    settings.SCHEDULES_NOTIFY_RETRY_MAX = 30
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (9, 30)]:
        delays = [notify.notification_retry_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


@pytest.mark.django_db(transaction=True)
def test_the_celery_task_retries_then_records_the_delivery_sent(
    settings, hook, queued, failing_action
):
    from workers.tasks import deliver_notification

    fail_a_job(webhook_url=hook.url("/flaky", (500, 0.0), (200, 0.0)))
    [delivery] = NotificationDelivery.objects.all()
    deliver_notification.apply(args=(delivery.pk,))  # eager: the retry runs at once
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 2, 200)
    assert [verify(r)["attempt"] for r in hook.to("/flaky")] == [1, 2]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((400, 0.0), "answered 400: nope, not today"),
        ((302, 0.0), "redirect to http://169.254.169.254/ not followed"),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_refusal_or_a_redirect_fails_without_retrying(
    settings, hook, queued, failing_action, answer, error
):
    fail_a_job(webhook_url=hook.url("/refuses", answer))
    [delivery] = NotificationDelivery.objects.all()
    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 1
    assert error in delivery.last_error and delivery.response_status == answer[0]


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (METADATA, "host '169.254.169.254' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"),
        ("http://10.0.0.5/hook", "host '10.0.0.5' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"),
        ("http://192.168.1.1/", "host '192.168.1.1' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"),
        ("http://[::1]:8000/", "host '::1' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"),
        ("http://user:pw@127.0.0.1/", "must not contain credentials"),
        ("file:///etc/passwd", "must be http or https"),
        ("http://127.0.0.1/" + "x" * 2000, "the limit is 2000"),
    ],
)
@pytest.mark.django_db
def test_the_ssrf_guard_refuses_a_job_webhook_naming_the_field(settings, url, rule):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    with pytest.raises(ValidationError) as refused:
        services.job_schedule(action="noop", due_at=timezone.now(), webhook_url=url)
    assert list(refused.value.message_dict) == ["webhook_url"]
    assert rule in refused.value.message_dict["webhook_url"][0]
    assert not Job.objects.exists()

    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    with pytest.raises(ValidationError) as refused:
        services.job_update(job=job, webhook_url=url)
    assert rule in refused.value.message_dict["webhook_url"][0]
    job.refresh_from_db()
    assert job.webhook_url == ""


@pytest.mark.django_db
def test_a_webhook_is_allowed_the_hosts_http_check_is_allowed_and_can_be_removed(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["hooks.example.com"]
    job = services.job_schedule(
        action="noop",
        due_at=timezone.now() + dt.timedelta(hours=1),
        webhook_url="https://hooks.example.com/schedules",
    )
    assert job.webhook_url == "https://hooks.example.com/schedules"
    job = services.job_update(job=job, webhook_url="")
    job.refresh_from_db()
    assert job.webhook_url == ""
    with pytest.raises(ValidationError) as refused:
        services.job_schedule_many(
            jobs=[{"action": "noop", "due_at": timezone.now(), "webhook_url": METADATA}]
        )
    assert "jobs[0].webhook_url" in refused.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_a_host_taken_off_the_allow_list_is_refused_before_any_request(
    settings, hook, queued, failing_action
):
    fail_a_job(webhook_url=hook.url("/job"))
    [delivery] = NotificationDelivery.objects.all()
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["hooks.example.com"]
    assert notify.notification_deliver(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "host '127.0.0.1' is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS" in delivery.last_error
    assert hook.received == []


# --- A notifier never fails or delays the job -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_hanging_webhook_does_not_delay_the_run_and_times_out_on_its_own(
    settings, hook, queued, failing_action
):
    settings.SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT = 0.5
    url = hook.url("/slow", (200, 3.0))
    started = time.monotonic()
    job, run = fail_a_job(webhook_url=url)
    took = time.monotonic() - started
    assert run.status == RunStatus.FAILED and job.status == PlanStatus.FAILED
    assert took < 1.0, f"recording the run took {took:.2f} s"
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED  # committed already
    [delivery] = NotificationDelivery.objects.all()
    assert queued == [delivery.pk]

    started = time.monotonic()
    delay = notify.notification_deliver(delivery_id=delivery.pk)
    assert time.monotonic() - started < 2.5  # the timeout, not the server's 3 s
    delivery.refresh_from_db()
    assert delay is not None and delivery.status == "pending" and delivery.attempts == 1
    assert "unreachable" in delivery.last_error and "timed out" in delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_raises_never_fails_the_job(
    settings, hook, queued, failing_action, monkeypatch, caplog
):
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/global")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("notifier bug")

    monkeypatch.setattr(receivers.payloads, "run_payload", broken)
    with caplog.at_level(logging.ERROR):
        job, run = fail_a_job()
    assert run.status == RunStatus.FAILED and job.status == PlanStatus.FAILED
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    assert not NotificationDelivery.objects.exists()
    assert "could not record the job_failed notifications" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_database_error_in_the_receiver_or_a_broker_down_never_fails_the_job(
    settings, hook, failing_action, monkeypatch
):
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = hook.url("/global")
    real = NotificationDelivery.objects.bulk_create

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("database went away")

    monkeypatch.setattr(NotificationDelivery.objects, "bulk_create", unavailable)
    job, _ = fail_a_job()
    assert job.status == PlanStatus.FAILED and not NotificationDelivery.objects.exists()

    monkeypatch.setattr(NotificationDelivery.objects, "bulk_create", real)
    from workers.tasks import deliver_notification

    def broker_down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker down")

    monkeypatch.setattr(deliver_notification, "apply_async", broker_down)
    job, _ = fail_a_job()
    assert job.status == PlanStatus.FAILED
    [delivery] = NotificationDelivery.objects.all()
    assert delivery.status == "pending"  # the admin's "send again" queues it again

    # ... and so does the dispatcher's sweep, once the row has waited a while.
    sent: list[int] = []
    monkeypatch.setattr(deliver_notification, "apply_async", lambda args, **kw: sent.extend(args))
    assert notify.notifications_requeue_stale() == 0  # not stale yet
    later = timezone.now() + notify.STALE_AFTER + dt.timedelta(seconds=1)
    assert notify.notifications_requeue_stale(now=later) == 1
    assert sent == [delivery.pk]


# --- Entry points: API, admin, command, checks ---------------------------------------------------


@pytest.mark.django_db
def test_the_api_sets_the_webhook_and_refuses_a_bad_one_with_400_naming_the_field(settings):
    from django.contrib.auth.models import User

    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["hooks.example.com"]
    api = client_for(User.objects.create_user("ada", password="pw-ada-12345"))
    due = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    refused = api.post("/api/jobs/", {"action": "noop", "due_at": due, "webhook_url": METADATA})
    assert refused.status_code == 400
    assert "169.254.169.254" in refused.json()["webhook_url"][0]
    assert not Job.objects.exists()

    good = "https://hooks.example.com/a"
    created = api.post("/api/jobs/", {"action": "noop", "due_at": due, "webhook_url": good})
    assert created.status_code == 201 and created.json()["webhook_url"] == good
    job_id = created.json()["id"]
    patched = api.patch(f"/api/jobs/{job_id}/", {"webhook_url": "http://10.0.0.5/"})
    assert patched.status_code == 400 and list(patched.json()) == ["webhook_url"]
    patched = api.patch(f"/api/jobs/{job_id}/", {"webhook_url": ""})
    assert patched.status_code == 200 and patched.json()["webhook_url"] == ""


@pytest.mark.django_db
def test_the_admin_form_shows_the_webhook_error_on_its_field(admin_client, settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["hooks.example.com"]
    local = timezone.localtime(timezone.now() + dt.timedelta(hours=1))
    data = {
        "name": "n",
        "action": "noop",
        "payload": "{}",
        "time_zone": "UTC",
        "precision": "seconds",
        "max_attempts": "3",
        "schedule_type": "once",
        "missed_policy": "run_once",
        "overlap_policy": "skip",
        "due_at_0": local.strftime("%Y-%m-%d"),
        "due_at_1": local.strftime("%H:%M:%S"),
    }
    add = reverse("admin:schedules_job_add")
    response = admin_client.post(add, {**data, "webhook_url": METADATA})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "169.254.169.254" in errors["webhook_url"][0]
    assert not Job.objects.exists()

    response = admin_client.post(add, {**data, "webhook_url": "https://hooks.example.com/x"})
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.webhook_url == "https://hooks.example.com/x"
    page = admin_client.get(reverse("admin:schedules_job_change", args=[job.pk]))
    assert b'name="webhook_url"' in page.content


@pytest.mark.django_db
def test_the_deliveries_admin_lists_shows_and_sends_again(
    admin_client, queued, django_capture_on_commit_callbacks
):
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    delivery = NotificationDelivery.objects.create(
        event="job_failed",
        notifier="webhook",
        target="https://hooks.example.com/x",
        job=job,
        payload={"event": "job_failed", "summary": "Job failed: boom"},
        status=DeliveryStatus.FAILED,
        attempts=5,
        last_error="gave up after 5 attempts: https://hooks.example.com/x answered 503",
        response_status=503,
    )
    changelist = reverse("admin:schedules_notificationdelivery_changelist")
    page = admin_client.get(changelist, {"status__exact": "failed"})
    assert page.status_code == 200
    assert b"gave up after 5 attempts" in page.content and str(job).encode() in page.content
    detail = admin_client.get(
        reverse("admin:schedules_notificationdelivery_change", args=[delivery.pk])
    )
    assert detail.status_code == 200 and b"Job failed: boom" in detail.content
    assert admin_client.get(reverse("admin:schedules_notificationdelivery_add")).status_code == 403

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist,
            {"action": "send_again", "_selected_action": [delivery.pk]},
            follow=True,
        )
    assert response.status_code == 200 and b"1 alert queued again." in response.content
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 0, "")
    assert queued == [delivery.pk]


@pytest.mark.django_db(transaction=True)
def test_schedule_job_takes_a_webhook_and_refuses_a_bad_one(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["hooks.example.com"]
    due = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    with pytest.raises(CommandError, match=r"webhook_url: host '169\.254\.169\.254'"):
        call_command(
            "schedule_job",
            "--action",
            "noop",
            "--due",
            due,
            "--webhook-url",
            METADATA,
            stdout=StringIO(),
        )
    out = StringIO()
    call_command(
        "schedule_job",
        "--action",
        "noop",
        "--due",
        due,
        "--json",
        "--webhook-url",
        "https://hooks.example.com/j",
        stdout=out,
    )
    assert json.loads(out.getvalue())["webhook_url"] == "https://hooks.example.com/j"


def test_bad_alert_settings_fail_the_checks_naming_the_setting(settings):
    settings.SCHEDULES_NOTIFY_EVENTS = ["job_failed", "job_exploded"]
    settings.SCHEDULES_NOTIFY_MAIL = ["admins", "everyone"]
    settings.ADMINS = []
    settings.SCHEDULES_NOTIFY_WEBHOOK_URL = METADATA
    settings.SCHEDULES_NOTIFY_WEBHOOK_SECRET = ""
    settings.SCHEDULES_NOTIFY_MAX_ATTEMPTS = 0
    settings.SCHEDULES_NOTIFY_BASE_URL = "scheduler.example.com"
    found = {m.id: m.msg for m in checks.check_notifications()}
    assert set(found) == {
        "schedules.E101",
        "schedules.E102",
        "schedules.W103",
        "schedules.E104",
        "schedules.W105",
        "schedules.E106",
        "schedules.E107",
    }
    assert "'job_exploded'" in found["schedules.E101"]
    assert "'everyone'" in found["schedules.E102"]
    assert "SCHEDULES_NOTIFY_WEBHOOK_URL" in found["schedules.E104"]
    assert "169.254.169.254" in found["schedules.E104"]
    assert "SCHEDULES_NOTIFY_MAX_ATTEMPTS" in found["schedules.E106"]


def test_the_default_settings_pass_the_checks():
    assert checks.check_notifications() == []
