"""A workflow's rule: a recurring job whose occurrences start one execution each; only
the next start is armed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError

from schedules import services
from schedules.models import (
    Execution,
    ExecutionStatus,
    Job,
    PlanStatus,
    RunStatus,
    Step,
    StepState,
    Workflow,
)
from tests.schedules.test_services_workflows import definition

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = ZoneInfo("Europe/Paris")


def pending(job: Job) -> list[Step]:
    return list(job.steps.filter(state__in=[StepState.SCHEDULED, StepState.QUEUED]))


def run_occurrence(job: Job) -> None:
    """The rule's next start, delivered at its due time on a clock the test holds."""
    (step,) = pending(job)
    with time_machine.travel(step.due_at, tick=False):
        run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None and run.status == RunStatus.SUCCEEDED, run and run.error


def test_every_8_hours_starts_one_execution_per_occurrence_and_arms_only_the_next():
    start = dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)
    workflow = services.workflow_create(
        name="migration", definition=definition(), overlap_policy="allow"
    )
    with time_machine.travel(start - dt.timedelta(minutes=5), tick=False):
        job = services.workflow_schedule(
            workflow=workflow,
            schedule_type="rate",
            rate_every=8,
            rate_unit="hours",
            starts_at=start,
            input={"env": "prod"},
        )
    workflow.refresh_from_db()
    assert workflow.schedule == job and job.action == "workflow_start"
    assert [s.due_at for s in pending(job)] == [start]
    for n in range(3):
        run_occurrence(job)
        (planned,) = pending(job)  # only the next start is armed
        assert planned.due_at == start + dt.timedelta(hours=8 * (n + 1))
    executions = list(Execution.objects.order_by("started_at"))
    assert [e.started_at for e in executions] == [
        start + dt.timedelta(hours=8 * n) for n in range(3)
    ]
    assert all(e.input == {"env": "prod"} and e.started_by_id == job.pk for e in executions)


def test_a_redelivered_start_finds_the_execution_it_started():
    workflow = services.workflow_create(name="once-per-step", definition=definition())
    job = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours"
    )
    (step,) = pending(job)
    with time_machine.travel(step.due_at, tick=False):
        services.step_execute(step_id=step.pk, version=step.version)
        # The same step's start, run again (a takeover after a lost worker would do it):
        from schedules.workflow_actions import WorkflowStartPayload, workflow_start
        from workers.actions import ActionContext

        ctx = ActionContext(
            step_id=step.pk,
            version=step.version,
            attempt=2,
            due_at=step.due_at,
            job_id=job.pk,
            classroom_id=None,
        )
        again = workflow_start(ctx, WorkflowStartPayload(workflow=workflow.name))
    assert again["created"] is False
    assert Execution.objects.count() == 1


def test_overlap_skip_skips_a_start_while_the_last_execution_runs():
    workflow = services.workflow_create(name="no-overlap", definition=definition())
    job = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours"
    )
    run_occurrence(job)
    run_occurrence(job)
    first = Execution.objects.get()
    assert first.status == ExecutionStatus.RUNNING
    last = job.runs.order_by("-started_at").first()
    assert last is not None and last.result == {
        "skipped": f"execution {first.pk} of 'no-overlap' is still running, and the "
        "workflow's overlap policy is skip"
    }


def test_a_cron_rule_in_paris_time_across_the_dst_change():
    workflow = services.workflow_create(
        name="paris", definition=definition(), overlap_policy="allow"
    )
    with time_machine.travel(dt.datetime(2026, 3, 28, 12, 0, tzinfo=PARIS), tick=False):
        job = services.workflow_schedule(
            workflow=workflow, schedule_type="cron", cron="0 9 * * *", time_zone="Europe/Paris"
        )
    run_occurrence(job)
    (planned,) = pending(job)
    assert planned.due_at.astimezone(PARIS) == dt.datetime(2026, 3, 30, 9, 0, tzinfo=PARIS)
    assert planned.due_at.utcoffset() == dt.timedelta(0)
    assert planned.due_at.hour == 7  # 09:00 in Paris is 07:00 UTC after the change


def test_a_new_rule_replaces_the_old_and_unschedule_cancels_it():
    workflow = services.workflow_create(name="replaced", definition=definition())
    old = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours", max_runs=3
    )
    new = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=2, rate_unit="hours"
    )
    old.refresh_from_db()
    assert old.status == PlanStatus.CANCELLED and not pending(old)
    assert len(pending(new)) == 1
    services.workflow_unschedule(workflow=Workflow.objects.get(pk=workflow.pk))
    new.refresh_from_db()
    assert new.status == PlanStatus.CANCELLED
    assert Workflow.objects.get(pk=workflow.pk).schedule is None


def test_a_bad_rule_is_refused_naming_the_field_and_nothing_is_written():
    workflow = services.workflow_create(name="bad-rule", definition=definition())
    with pytest.raises(ValidationError) as refused:
        services.workflow_schedule(workflow=workflow, schedule_type="once")
    assert "schedule_type" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        services.workflow_schedule(
            workflow=workflow, schedule_type="cron", cron="61 * * * *", time_zone="Mars/Base"
        )
    assert {"cron", "time_zone"} <= set(refused.value.message_dict)
    assert not Job.objects.exists()
    assert Workflow.objects.get(pk=workflow.pk).schedule is None
