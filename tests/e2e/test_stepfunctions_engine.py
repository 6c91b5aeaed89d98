"""End to end on AWS (moto server): save → commit → Step Functions → SQS → Celery → run.

moto differs from AWS in one way that matters here: its Waits end up to 2 s
early. The worker holds an early message until the due time, so runs still
start at or after it.
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
from schedules.models import PlanStatus, Run, RunStatus, Step, StepState
from tests.fixtures_aws import Provisioned

from .conftest import RecordingService, Stack, start_stack
from .test_local_engine import wait_until_final

pytestmark = pytest.mark.e2e

# Measured on moto (docs/aws.md): steps start 4-80 ms after their due time.
LATENESS_TOLERANCE = dt.timedelta(seconds=1)


@pytest.fixture
def sfn_stack(
    aws: Provisioned,
    transactional_db: None,
    tmp_path: Path,
    recording_service: type[RecordingService],
    settings,
) -> Iterator[Stack]:
    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "local"}
    settings.SCHEDULES_MIN_PING_INTERVAL = 1
    get_engine.cache_clear()
    stack = start_stack(
        tmp_path,
        recording_service,
        broker="sqs://",
        queue=aws.queue_name,
        dispatcher=False,
        SCHEDULES_SQS_QUEUE_URL=aws.queue_url,
        SCHEDULES_SFN_STATE_MACHINE_ARN=aws.state_machine_arn,
        SCHEDULES_ENGINE_SECONDS="stepfunctions",
    )
    yield stack
    stack.stop()
    get_engine.cache_clear()


def test_precise_email_and_classroom_run_once_on_time(sfn_stack: Stack) -> None:
    now = timezone.now()
    job = services.email_schedule(
        to=["ada@example.com"],
        subject="Precise",
        body="On the second",
        due_at=now + dt.timedelta(seconds=3),
    )
    classroom = services.classroom_create(
        title="Physics",
        start=now + dt.timedelta(seconds=3),
        end=now + dt.timedelta(seconds=8),
        recording_service_ref="room-9",
        live_ping_interval=2,
    )
    steps = Step.objects.all()
    assert {s.engine for s in steps} == {"stepfunctions"}
    assert all(":execution:" in s.external_ref for s in steps)
    wait_until_final(60, sfn_stack)

    assert len(sfn_stack.mail()) == 1, sfn_stack.logs()
    ops = [op for _, op, _ in sfn_stack.recording.calls]
    assert ops == ["start", "ping", "ping", "stop"], sfn_stack.logs()
    job.refresh_from_db()
    classroom.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED and classroom.status == PlanStatus.SUCCEEDED
    runs = list(Run.objects.all())
    assert len(runs) == 5 and {r.status for r in runs} == {RunStatus.SUCCEEDED}
    for run in runs:
        print(f"stepfunctions lateness {run.action}: {run.lateness.total_seconds() * 1000:.0f} ms")
        assert dt.timedelta(0) <= run.lateness <= LATENESS_TOLERANCE, (run.action, run.lateness)


def test_cancel_reschedule_and_stale_messages(sfn_stack: Stack) -> None:
    now = timezone.now()
    cancelled = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=3))
    moved = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=2))
    stale = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=2))
    services.job_cancel(job=cancelled)
    services.job_reschedule(job=moved, due_at=now + dt.timedelta(seconds=4))
    services.job_reschedule(job=moved, due_at=now + dt.timedelta(seconds=6))
    # A fence bump the engine never heard of (as if the disarm had failed): the
    # old execution still delivers version 1, which must be skipped.
    stale_step = stale.steps.get()
    Step.objects.filter(pk=stale_step.pk).update(version=2, due_at=now + dt.timedelta(days=1))

    deadline = timezone.now() + dt.timedelta(seconds=40)
    while timezone.now() < deadline and not (
        Run.objects.filter(job=moved, status=RunStatus.SUCCEEDED).exists()
        and Run.objects.filter(job=stale).exists()
    ):
        time.sleep(0.2)

    # A stopped execution normally sends nothing; if one slipped through (moto may
    # finish a state it is in when the stop arrives), its message is stale and
    # recorded as skipped. Either way the action runs only for the current version.
    def executed(job: object) -> list[Run]:
        runs = Run.objects.filter(job=job)
        for run in runs.filter(status=RunStatus.SKIPPED):
            assert "stale message" in run.note or "cancelled" in run.note, run.note
        return list(runs.exclude(status=RunStatus.SKIPPED))

    assert executed(cancelled) == []
    assert Step.objects.get(job=cancelled).state == StepState.CANCELLED
    (run,) = executed(moved)
    assert run.status == RunStatus.SUCCEEDED and run.version == 3
    assert run.result["started_unix"] >= (now + dt.timedelta(seconds=6)).timestamp()
    (skipped,) = Run.objects.filter(job=stale)
    assert skipped.status == RunStatus.SKIPPED and skipped.version == 1
    assert "stale message: version 1" in skipped.note
    stale_step.refresh_from_db()
    assert stale_step.state == StepState.SCHEDULED  # untouched by the stale message


def test_a_workflow_s_tasks_and_waits_run_as_step_functions_timers(sfn_stack: Stack) -> None:
    """A workflow runs unchanged on Step Functions: each Task and Wait the worker's record
    plans is armed there after its commit, and released through SQS to the worker."""
    from schedules.models import Execution, ExecutionStatus

    workflow = services.workflow_create(
        name="sfn-workflow",
        definition={
            "StartAt": "First",
            "States": {
                "First": {"Type": "Task", "Action": "noop", "Next": "Pause"},
                "Pause": {"Type": "Wait", "Seconds": 2, "Next": "Second"},
                "Second": {"Type": "Task", "Action": "noop", "End": True},
            },
        },
    )
    started = services.execution_start(workflow=workflow).execution
    deadline = time.time() + 60
    while Execution.objects.get(pk=started.pk).status == ExecutionStatus.RUNNING:
        assert time.time() < deadline, sfn_stack.logs()
        time.sleep(0.2)
    execution = Execution.objects.get(pk=started.pk)
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.cause
    steps = list(execution.steps.order_by("sequence"))
    assert [s.state_name for s in steps] == ["First", "Pause", "Second"]
    assert {s.engine for s in steps} == {"stepfunctions"}
    assert all(":execution:" in s.external_ref for s in steps)
    runs = list(Run.objects.filter(execution=execution).order_by("pk"))
    assert [(r.status, r.engine) for r in runs] == [(RunStatus.SUCCEEDED, "stepfunctions")] * 3
    assert all(dt.timedelta(0) <= r.lateness < LATENESS_TOLERANCE for r in runs)
    pause = steps[1]
    assert pause.due_at - runs[0].finished_at >= dt.timedelta(seconds=1.9)
