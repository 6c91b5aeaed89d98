"""End to end on the embedded default: save → commit → dispatcher → broker → worker → run."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import PlanStatus, Run, RunStatus, Step, StepState

from .conftest import Stack

pytestmark = pytest.mark.e2e


def wait_until_final(timeout: float, stack: Stack) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not Step.objects.exclude(
            state__in=[StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED]
        ).exists():
            return
        time.sleep(0.1)
    states = list(Step.objects.values_list("pk", "action", "state", "due_at"))
    pytest.fail(f"steps not finished after {timeout} s: {states}\n{stack.logs()}")


def test_email_and_classroom_run_on_time_once(stack: Stack, settings) -> None:
    settings.SCHEDULES_MIN_PING_INTERVAL = 1
    now = timezone.now()
    job = services.email_schedule(
        to=["ada@example.com"],
        subject="Class at nine",
        body="See you",
        due_at=now + dt.timedelta(seconds=2),
    )
    classroom = services.classroom_create(
        title="Maths",
        start=now + dt.timedelta(seconds=2),
        end=now + dt.timedelta(seconds=6),
        recording_service_ref="room-7",
        live_ping_interval=1,
    )
    wait_until_final(30, stack)

    # The mail went out exactly once.
    assert len(stack.mail()) == 1, stack.logs()
    assert "Subject: Class at nine" in stack.mail()[0].read_text()
    job.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED

    # Recording started, pinged three times (every second strictly between), then stopped.
    calls = stack.recording.calls
    assert [op for _, op, _ in calls] == ["start", "ping", "ping", "ping", "stop"], stack.logs()
    assert {body["recording_service_ref"] for _, _, body in calls} == {"room-7"}
    for called_at, _, body in calls:
        assert called_at >= dt.datetime.fromisoformat(body["due_at"]).timestamp()
    classroom.refresh_from_db()
    assert classroom.status == PlanStatus.SUCCEEDED

    # One successful run per step, each with its lateness recorded; nothing doubled.
    runs = Run.objects.all()
    assert runs.count() == Step.objects.count() == 6
    assert set(runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    for run in runs:
        assert run.lateness is not None and run.lateness >= dt.timedelta(0)
        assert run.lateness < dt.timedelta(seconds=2), (run.action, run.lateness)


def test_cancelled_and_rescheduled_jobs(stack: Stack) -> None:
    now = timezone.now()
    cancelled = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=2))
    moved = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=1))
    services.job_cancel(job=cancelled)
    services.job_reschedule(job=moved, due_at=now + dt.timedelta(seconds=2))
    services.job_reschedule(job=moved, due_at=now + dt.timedelta(seconds=3))
    wait_until_final(30, stack)
    assert not Run.objects.filter(job=cancelled).exists()
    (run,) = Run.objects.filter(job=moved)
    assert run.status == RunStatus.SUCCEEDED and run.version == 3
    assert run.result["started_unix"] >= (now + dt.timedelta(seconds=3)).timestamp()
