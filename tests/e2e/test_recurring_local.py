"""End to end on the embedded default: a recurring job and a polling job, each step planned
by the worker, armed after its commit, released by the dispatcher and run once."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import PENDING_STATES, Job, PlanStatus, Run, RunStatus, StepState
from tests.status_service import TaskStatus, task_status

from .conftest import Stack

pytestmark = pytest.mark.e2e


def wait_for(job: Job, status: str, timeout: float, stack: Stack) -> Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job.refresh_from_db()
        if job.status == status:
            return job
        time.sleep(0.1)
    runs = list(Run.objects.filter(job=job).values_list("due_at", "status", "note"))
    pytest.fail(f"job is {job.status}, not {status}, after {timeout} s: {runs}\n{stack.logs()}")


def test_a_job_every_two_seconds_runs_three_times_and_stops_at_its_end(stack: Stack) -> None:
    start = timezone.now() + dt.timedelta(seconds=2)
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=2,
        rate_unit="seconds",
        starts_at=start,
        ends_at=start + dt.timedelta(seconds=5),
    )
    wait_for(job, PlanStatus.SUCCEEDED, 30, stack)
    time.sleep(3)  # past where a fourth occurrence would have been
    runs = list(Run.objects.filter(job=job).order_by("due_at"))
    assert [(r.due_at, r.status) for r in runs] == [
        (start + dt.timedelta(seconds=2 * k), RunStatus.SUCCEEDED) for k in range(3)
    ], stack.logs()
    for run in runs:
        assert run.lateness is not None
        assert dt.timedelta(0) <= run.lateness < dt.timedelta(seconds=1), run.lateness
        assert run.result["started_unix"] >= run.due_at.timestamp()
    # One step per occurrence, each planned when the previous one was over; none pending.
    assert list(job.steps.order_by("sequence").values_list("sequence", "state")) == [
        (k, StepState.SUCCEEDED) for k in range(3)
    ]
    job.refresh_from_db()
    assert job.run_count == 3 and not job.steps.filter(state__in=PENDING_STATES).exists()


def test_a_poll_job_completes_on_its_third_check(stack: Stack, settings: Any) -> None:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]  # the worker's: stack env
    with task_status("Pending", "Running", "Stopped") as url:
        job = services.job_schedule(
            action="http_check",
            due_at=timezone.now() + dt.timedelta(seconds=1),
            payload={"url": url, "field": "task.state", "equals": "Stopped"},
            poll_interval=1,
            poll_max_checks=5,
        )
        wait_for(job, PlanStatus.SUCCEEDED, 30, stack)
    runs = list(Run.objects.filter(job=job).order_by("due_at"))
    assert [(r.status, r.result["value"]) for r in runs] == [
        (RunStatus.NOT_DONE, "Pending"),
        (RunStatus.NOT_DONE, "Running"),
        (RunStatus.SUCCEEDED, "Stopped"),
    ], stack.logs()
    assert len(TaskStatus.seen) == 3  # each check once
    gaps = [b - a for a, b in zip(TaskStatus.seen, TaskStatus.seen[1:], strict=False)]
    assert all(gap >= 1 for gap in gaps), gaps  # the poll interval between checks
    assert list(job.steps.order_by("poll_number").values_list("poll_number", "state")) == [
        (0, StepState.SUCCEEDED),
        (1, StepState.SUCCEEDED),
        (2, StepState.SUCCEEDED),
    ]
