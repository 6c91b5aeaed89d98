"""End to end on AWS (moto server) for relaxed jobs: DynamoDB item → TTL removal →
forwarder → SQS → Celery worker, and the overdue sweep when the removal never comes.

moto never expires items, so the TTL removal is the record AWS would send,
handed to the Lambda handler; everything after it is real.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from schedules import services
from schedules.engines import get_engine
from schedules.models import Run, RunStatus, StepState
from schedules.ttl_forwarder import lambda_handler
from tests.fixtures_aws import Provisioned, ttl_removal

from .conftest import RecordingService, Stack, start_stack

pytestmark = pytest.mark.e2e

MAX_LATENESS = 3  # seconds, SCHEDULES_TTL_MAX_LATENESS for this test


@pytest.fixture
def ttl_stack(
    aws: Provisioned,
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
    settings,
    monkeypatch,
) -> Iterator[Stack]:
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "dynamodb_ttl"}
    settings.SCHEDULES_TTL_MAX_LATENESS = MAX_LATENESS
    get_engine.cache_clear()
    monkeypatch.setenv("JOBS_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("JOBS_QUEUE_NAME", aws.queue_name)
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="sqs://",
        queue=aws.queue_name,
        dispatcher=False,
        SCHEDULES_SQS_QUEUE_URL=aws.queue_url,
        SCHEDULES_ENGINE_RELAXED="dynamodb_ttl",
        SCHEDULES_TTL_MAX_LATENESS=str(MAX_LATENESS),
    )
    stack.start_dispatcher(sweep_interval=1)
    yield stack
    stack.stop()
    get_engine.cache_clear()


def wait_for_runs(job: object, count: int, timeout: float = 30) -> list[Run]:
    """The job's runs once there are ``count`` of them and none is still running.

    A run row is written as ``running`` when the worker claims the step, before
    the action has finished: waiting for the row alone would race the worker.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = list(Run.objects.filter(job=job).order_by("pk"))
        if len(runs) >= count and all(run.status != RunStatus.RUNNING for run in runs):
            return runs
        time.sleep(0.1)
    pytest.fail(f"expected {count} run(s) of {job}, got {list(Run.objects.filter(job=job))}")


def test_ttl_removal_runs_the_step_once(ttl_stack: Stack) -> None:
    job = services.job_schedule(
        action="noop", precision="relaxed", due_at=timezone.now() + dt.timedelta(hours=1)
    )
    step = job.steps.get()
    assert step.engine == "dynamodb_ttl" and step.external_ref == f"step#{step.pk}#v1"
    services.job_run_now(job=job)  # due now, armed as version 2
    step.refresh_from_db()
    record = ttl_removal(step.pk, step.version, seq="1")
    assert lambda_handler({"Records": [record]}, None) == {"batchItemFailures": []}
    (run,) = wait_for_runs(job, 1)
    assert run.status == RunStatus.SUCCEEDED and run.engine == "dynamodb_ttl"
    # At-least-once: the same record again is acknowledged and skipped, not run.
    lambda_handler({"Records": [ttl_removal(step.pk, step.version, seq="2")]}, None)
    _, duplicate = wait_for_runs(job, 2)
    assert duplicate.status == RunStatus.SKIPPED and "duplicate delivery" in duplicate.note
    # A removal of the version-1 item (disarmed by run now) is stale.
    lambda_handler({"Records": [ttl_removal(step.pk, 1, seq="3")]}, None)
    *_, stale = wait_for_runs(job, 3)
    assert stale.status == RunStatus.SKIPPED and "stale message: version 1" in stale.note


def test_a_cancelled_relaxed_job_runs_nothing(ttl_stack: Stack) -> None:
    job = services.job_schedule(
        action="noop", precision="relaxed", due_at=timezone.now() + dt.timedelta(hours=1)
    )
    step = job.steps.get()
    services.job_cancel(job=job)  # deletes the item: a user delete the forwarder ignores
    user_delete = {k: v for k, v in ttl_removal(step.pk, 1).items() if k != "userIdentity"}
    assert lambda_handler({"Records": [user_delete]}, None) == {"batchItemFailures": []}
    time.sleep(3)  # long enough for a wrongly forwarded message to have run
    assert not Run.objects.filter(job=job).exists()
    step.refresh_from_db()
    assert step.state == StepState.CANCELLED


def test_a_step_whose_ttl_removal_never_comes_runs_within_the_bound(ttl_stack: Stack) -> None:
    due = timezone.now() + dt.timedelta(seconds=1)
    job = services.job_schedule(action="noop", precision="relaxed", due_at=due)
    (run,) = wait_for_runs(job, 1, timeout=30)
    assert run.status == RunStatus.SUCCEEDED
    # Released by the sweep (every second) once overdue by MAX_LATENESS.
    assert dt.timedelta(seconds=MAX_LATENESS) <= run.lateness
    assert run.lateness <= dt.timedelta(seconds=MAX_LATENESS + 5)


def test_a_relaxed_workflow_s_wait_is_a_ttl_item_its_removal_moves_it_on(ttl_stack: Stack) -> None:
    """A relaxed workflow runs unchanged on DynamoDB TTL: its Wait is an item whose removal
    (handed to the forwarder as AWS would send it) releases the step to the worker."""
    from schedules.models import Execution, ExecutionStatus, Step

    workflow = services.workflow_create(
        name="ttl-workflow",
        precision="relaxed",
        definition={
            "StartAt": "Pause",
            "States": {
                "Pause": {"Type": "Wait", "Seconds": 3600, "Next": "Ping"},
                "Ping": {"Type": "Task", "Action": "noop", "End": True},
            },
        },
    )
    execution = services.execution_start(workflow=workflow).execution
    pause = Step.objects.get(execution=execution)
    assert pause.engine == "dynamodb_ttl" and pause.external_ref == f"step#{pause.pk}#v1"
    Step.objects.filter(pk=pause.pk).update(due_at=timezone.now())  # as if the hour passed
    record = ttl_removal(pause.pk, pause.version, seq="1")
    assert lambda_handler({"Records": [record]}, None) == {"batchItemFailures": []}
    deadline = time.time() + 60
    while Execution.objects.get(pk=execution.pk).status == ExecutionStatus.RUNNING:
        assert time.time() < deadline, ttl_stack.logs()
        time.sleep(0.2)
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.cause
    ping = Step.objects.get(execution=execution, state_name="Ping")
    assert ping.engine == "dynamodb_ttl"
    runs = list(Run.objects.filter(execution=execution).order_by("pk"))
    assert [(r.step.state_name, r.status, r.engine) for r in runs] == [
        ("Pause", RunStatus.SUCCEEDED, "dynamodb_ttl"),
        ("Ping", RunStatus.SUCCEEDED, "dynamodb_ttl"),
    ]
