"""End to end on AWS (moto server): save → commit → EventBridge Scheduler schedule →
SQS → Celery worker → run.

moto keeps schedules but never fires them, so the test does what EventBridge
Scheduler does when a schedule's minute comes: it reads the schedule back from
moto, sends its ``Target.Input`` to the target queue, and deletes the schedule
(``ActionAfterCompletion=DELETE``). Everything after that is real: moto's SQS, a
Celery worker process on the SQS transport, the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from schedules import services
from schedules.aws import aws_client
from schedules.engines import get_engine
from schedules.engines.eventbridge import ARM_LEAD_SECONDS, parse_at
from schedules.models import Job, Run, RunStatus, StepState
from tests.fixtures_aws import Provisioned

from .conftest import RecordingService, Stack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def eb_stack(
    aws: Provisioned,
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
    settings: Any,
) -> Iterator[Stack]:
    # Every precision class on this engine, whatever the classes are called.
    settings.SCHEDULES_ENGINES = dict.fromkeys(settings.SCHEDULES_ENGINES, "eventbridge")
    get_engine.cache_clear()
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="sqs://",
        queue=aws.queue_name,
        dispatcher=False,
        SCHEDULES_SQS_QUEUE_URL=aws.queue_url,
        SCHEDULES_SQS_QUEUE_ARN=aws.queue_arn,
        SCHEDULES_SQS_DLQ_ARN=aws.dlq_arn,
        SCHEDULES_EVENTBRIDGE_GROUP=aws.schedule_group,
        SCHEDULES_EVENTBRIDGE_ROLE_ARN=aws.scheduler_role_arn,
    )
    yield stack
    stack.stop()
    get_engine.cache_clear()


def schedule_of(aws: Provisioned, step_id: int, version: int) -> dict[str, Any]:
    return dict(
        aws_client("scheduler").get_schedule(
            GroupName=aws.schedule_group, Name=f"step-{step_id}-v{version}"
        )
    )


def fire(aws: Provisioned, schedule: dict[str, Any]) -> None:
    """What EventBridge Scheduler does in the schedule's minute: send the target's input
    to the target queue, then delete the one-time schedule."""
    assert schedule["Target"]["Arn"] == aws.queue_arn
    aws_client("sqs").send_message(QueueUrl=aws.queue_url, MessageBody=schedule["Target"]["Input"])
    scheduler = aws_client("scheduler")
    with contextlib.suppress(scheduler.exceptions.ResourceNotFoundException):  # fired before
        scheduler.delete_schedule(GroupName=schedule["GroupName"], Name=schedule["Name"])


def wait_for_runs(job: Job, count: int, stack: Stack, timeout: float = 30) -> list[Run]:
    """The job's runs once there are ``count`` and none is still running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = list(Run.objects.filter(job=job).order_by("pk"))
        if len(runs) >= count and all(run.status != RunStatus.RUNNING for run in runs):
            return runs
        time.sleep(0.1)
    pytest.fail(
        f"expected {count} run(s) of {job}, got {list(Run.objects.filter(job=job))}\n{stack.logs()}"
    )


def test_the_schedule_s_message_runs_the_step_once(eb_stack: Stack, aws: Provisioned) -> None:
    due = timezone.now() + dt.timedelta(seconds=2)
    job = services.job_schedule(action="noop", due_at=due)
    step = job.steps.get()
    assert step.engine == "eventbridge"
    assert step.external_ref.endswith(f":schedule/{aws.schedule_group}/step-{step.pk}-v1")
    schedule = schedule_of(aws, step.pk, 1)
    minute = parse_at(schedule["ScheduleExpression"])
    # The due time rounded up, or (due within ARM_LEAD_SECONDS of the arm) the next minute.
    assert minute is not None and dt.timedelta(0) <= minute - due
    assert minute - due < dt.timedelta(minutes=1, seconds=ARM_LEAD_SECONDS)

    # AWS sends in that minute, never before the due time; here, as soon as it is due.
    while timezone.now() < due:
        time.sleep(0.05)
    fire(aws, schedule)
    (run,) = wait_for_runs(job, 1, eb_stack)
    assert run.status == RunStatus.SUCCEEDED, eb_stack.logs()
    assert run.engine == "eventbridge" and run.version == 1
    assert run.lateness >= dt.timedelta(0)
    job.refresh_from_db()
    step.refresh_from_db()
    assert step.state == StepState.SUCCEEDED

    # At-least-once: the same message again is acknowledged and skipped, not run.
    fire(aws, schedule)
    _, duplicate = wait_for_runs(job, 2, eb_stack)
    assert duplicate.status == RunStatus.SKIPPED and "duplicate delivery" in duplicate.note


def test_reschedule_and_cancel_leave_only_the_current_schedule(
    eb_stack: Stack, aws: Provisioned
) -> None:
    now = timezone.now()
    moved = services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=1))
    cancelled = services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=1))
    step = moved.steps.get()
    old = schedule_of(aws, step.pk, 1)
    services.job_reschedule(job=moved, due_at=now + dt.timedelta(seconds=1))
    services.job_cancel(job=cancelled)
    step.refresh_from_db()
    assert step.version == 2
    names = {
        s["Name"]
        for page in aws_client("scheduler")
        .get_paginator("list_schedules")
        .paginate(GroupName=aws.schedule_group)
        for s in page["Schedules"]
    }
    assert names == {f"step-{step.pk}-v2"}  # v1 and the cancelled job's are deleted

    # Had v1's schedule fired anyway (a disarm that failed), its message is stale.
    while timezone.now() < now + dt.timedelta(seconds=1):
        time.sleep(0.05)
    fire(aws, old)
    (stale,) = wait_for_runs(moved, 1, eb_stack)
    assert stale.status == RunStatus.SKIPPED and "stale message: version 1" in stale.note
    fire(aws, schedule_of(aws, step.pk, 2))
    _, run = wait_for_runs(moved, 2, eb_stack)
    assert run.status == RunStatus.SUCCEEDED and run.version == 2
    assert not Run.objects.filter(job=cancelled).exists()
