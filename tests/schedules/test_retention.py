"""Retention and purge (schedules/services/retention.py, manage.py purge and schedule_purge).

Each rule of "nothing still needed is deleted" has a test; so do the per-status ages, the
dry run (it counts exactly what a purge then deletes, and deletes nothing), the batch
bound (each batch its own transaction, in the lock order) and the recurring purge job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from schedules import services
from schedules.checks import check_retention
from schedules.models import (
    Classroom,
    Execution,
    ExecutionStatus,
    IdempotencyRecord,
    Job,
    NotificationDelivery,
    PlanStatus,
    Run,
    RunStatus,
    ScheduleType,
    Step,
    StepState,
    Workflow,
    WorkflowVersion,
)
from schedules.services import Retention, retention_purge
from schedules.services import retention as retention_module
from schedules.services.retention import PURGE_JOB_NAME
from tests.schedules.test_lock_order import LockRecorder

pytestmark = pytest.mark.django_db

DEFINITION = {
    "StartAt": "Ping",
    "States": {"Ping": {"Type": "Task", "Action": "noop", "End": True}},
}


def ago(days: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)


def make_job(
    *, status: str = PlanStatus.SUCCEEDED, days: float = 40, recurring: bool = False, **fields: Any
) -> Job:
    """A job as the worker leaves it: due ``days`` ago, last changed then."""
    if recurring:
        fields.update(schedule_type=ScheduleType.RATE, rate_every=1, rate_unit="hours")
    job = Job.objects.create(action="noop", due_at=ago(days), status=status, **fields)
    Job.objects.filter(pk=job.pk).update(updated_at=ago(days))
    return job


def make_step(
    *,
    days: float = 40,
    state: str = StepState.SUCCEEDED,
    job: Job | None = None,
    classroom: Classroom | None = None,
    execution: Execution | None = None,
    sequence: int = 0,
    poll_number: int = 0,
) -> Step:
    """A step due ``days`` ago (bulk_create: no post_save, so no engine sync)."""
    (step,) = Step.objects.bulk_create(
        [
            Step(
                job=job,
                classroom=classroom,
                execution=execution,
                action="noop",
                due_at=ago(days),
                state=state,
                engine="local",
                sequence=sequence,
                poll_number=poll_number,
            )
        ]
    )
    Step.objects.filter(pk=step.pk).update(updated_at=ago(days))
    return step


def make_run(
    step: Step, *, days: float = 40, status: str = RunStatus.SUCCEEDED, uncertain: bool = False
) -> Run:
    return Run.objects.create(
        step=step,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        execution_id=step.execution_id,
        action=step.action,
        engine="local",
        version=1,
        attempt=1,
        status=status,
        due_at=ago(days),
        started_at=ago(days),
        finished_at=None if status == RunStatus.RUNNING else ago(days),
        uncertain=uncertain,
    )


def finished_job(
    *, status: str = PlanStatus.SUCCEEDED, days: float = 40, run_status: str = RunStatus.SUCCEEDED
) -> tuple[Job, Step, Run]:
    state = {PlanStatus.SUCCEEDED: StepState.SUCCEEDED, PlanStatus.FAILED: StepState.FAILED}
    job = make_job(status=status, days=days)
    step = make_step(job=job, days=days, state=state.get(status, StepState.CANCELLED))
    return job, step, make_run(step, days=days, status=run_status)


def live_recurring_job(days: float = 40) -> tuple[Job, Step]:
    """A recurring job that goes on: its next occurrence pending."""
    job = make_job(status=PlanStatus.SCHEDULED, recurring=True, days=-1)
    pending = make_step(job=job, state=StepState.SCHEDULED, days=-1, sequence=1000)
    return job, pending


def exists(row: Any) -> bool:
    return type(row).objects.filter(pk=row.pk).exists()


def purge(**kwargs: Any) -> services.PurgeReport:
    return retention_purge(**kwargs)


# --- the ages ----------------------------------------------------------------------------


def test_each_finished_run_is_kept_for_its_status_age():
    """Succeeded (and skipped, not done) 30 days, failed (and retrying, abandoned) 90,
    uncertain 180; a run still running is never deleted, however old."""
    job, _ = live_recurring_job()
    cases = [
        (RunStatus.SUCCEEDED, False, 29, True),
        (RunStatus.SUCCEEDED, False, 31, False),
        (RunStatus.SKIPPED, False, 31, False),
        (RunStatus.NOT_DONE, False, 31, False),
        (RunStatus.FAILED, False, 31, True),
        (RunStatus.FAILED, False, 89, True),
        (RunStatus.FAILED, False, 91, False),
        (RunStatus.RETRYING, False, 89, True),
        (RunStatus.ABANDONED, False, 91, False),
        (RunStatus.SUCCEEDED, True, 91, True),
        (RunStatus.FAILED, True, 179, True),
        (RunStatus.SUCCEEDED, True, 181, False),
    ]
    runs = []
    for sequence, (status, uncertain, days, kept) in enumerate(cases):
        step = make_step(job=job, days=days, sequence=sequence)
        runs.append((make_run(step, days=days, status=status, uncertain=uncertain), kept))
    newest = make_run(make_step(job=job, days=1, sequence=999), days=1)
    # A running run (its step is running: a takeover will mark it abandoned).
    running = make_run(
        make_step(job=job, days=400, state=StepState.RUNNING, sequence=998),
        days=400,
        status=RunStatus.RUNNING,
    )

    report = purge()

    assert {run.pk for run, kept in runs if exists(run)} == {run.pk for run, kept in runs if kept}
    assert exists(newest) and exists(running)
    assert report.deleted["runs"] == sum(1 for _, kept in runs if not kept)


def test_each_finished_step_and_job_is_kept_for_its_status_age():
    kept = [
        finished_job(status=PlanStatus.SUCCEEDED, days=29),
        finished_job(status=PlanStatus.FAILED, days=89, run_status=RunStatus.FAILED),
        finished_job(status=PlanStatus.CANCELLED, days=29, run_status=RunStatus.SKIPPED),
    ]
    gone = [
        finished_job(status=PlanStatus.SUCCEEDED, days=31),
        finished_job(status=PlanStatus.FAILED, days=91, run_status=RunStatus.FAILED),
        finished_job(status=PlanStatus.CANCELLED, days=31, run_status=RunStatus.SKIPPED),
    ]

    report = purge()

    assert all(exists(row) for rows in kept for row in rows)
    assert not any(exists(row) for rows in gone for row in rows)
    assert (report.deleted["jobs"], report.deleted["steps"], report.deleted["runs"]) == (3, 3, 3)


def test_a_cancelled_job_is_kept_until_its_due_time_is_old_enough():
    """Its age counts from the later of its due time and its last change."""
    job = make_job(status=PlanStatus.CANCELLED, days=-30)  # due in 30 days
    Job.objects.filter(pk=job.pk).update(updated_at=ago(60))  # cancelled 60 days ago
    step = make_step(job=job, days=-30, state=StepState.CANCELLED)
    purge()
    assert exists(job) and exists(step)


def test_zero_keeps_forever_and_older_than_sets_one_age_for_all(settings):
    settings.SCHEDULES_KEEP_SUCCEEDED_DAYS = None
    succeeded = finished_job(days=400)
    failed = finished_job(status=PlanStatus.FAILED, days=2, run_status=RunStatus.FAILED)
    assert purge().total == 0
    assert all(exists(row) for row in (*succeeded, *failed))

    report = purge(retention=Retention.older_than(dt.timedelta(days=1)))

    assert not any(exists(row) for row in (*succeeded, *failed))
    assert report.deleted["jobs"] == 2


# --- nothing still needed is deleted ---------------------------------------------------------


def test_each_jobs_newest_run_and_latest_step_stay_until_the_job_goes():
    # A recurring job that goes on: old occurrences go, the newest run stays.
    job, pending = live_recurring_job()
    old = [make_step(job=job, days=50 - n, sequence=n) for n in range(3)]
    runs = [make_run(step, days=50 - n) for n, step in enumerate(old)]
    # A failed job not old enough to go, with old runs: run_now runs its latest step again.
    failed = make_job(status=PlanStatus.FAILED, days=10)
    failed_step = make_step(job=failed, days=100, state=StepState.FAILED)
    first = make_run(failed_step, days=100, status=RunStatus.RETRYING)
    last = make_run(failed_step, days=99, status=RunStatus.FAILED)

    purge()

    assert [exists(run) for run in runs] == [False, False, True]
    assert [exists(step) for step in old] == [False, False, True]
    assert exists(pending) and exists(job)
    assert not exists(first) and exists(last) and exists(failed_step) and exists(failed)


def test_runs_of_unfinished_steps_and_of_an_occurrence_still_going_stay():
    job, _ = live_recurring_job()
    # A step waiting for its retry, with the old failed attempt's run.
    retrying = make_step(job=job, days=100, state=StepState.SCHEDULED, sequence=1)
    retry_run = make_run(retrying, days=100, status=RunStatus.RETRYING)
    # A polling occurrence: its first check finished long ago, its next check is pending
    # (planning the next occurrence reads the first check and its run).
    first_check = make_step(job=job, days=100, sequence=2, poll_number=0)
    first_run = make_run(first_check, days=100, status=RunStatus.NOT_DONE)
    next_check = make_step(job=job, days=-1, state=StepState.SCHEDULED, sequence=2, poll_number=1)
    # A step still queued or running, with old runs.
    queued = make_step(job=job, days=100, state=StepState.QUEUED, sequence=3)
    queued_run = make_run(queued, days=100, status=RunStatus.RETRYING)
    make_run(make_step(job=job, days=1, sequence=900), days=1)  # the job's newest run

    report = purge()

    assert all(
        exists(row)
        for row in (retrying, retry_run, first_check, first_run, next_check, queued, queued_run)
    )
    assert report.total == 0


def test_only_finished_jobs_go():
    not_finished = [
        make_job(status=status, days=400) for status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING)
    ]
    for job in not_finished:
        make_run(make_step(job=job, days=400, state=StepState.FAILED), days=400, status="failed")
    purge()
    assert all(exists(job) for job in not_finished)
    assert Step.objects.count() == Run.objects.count() == 2  # each job's newest run and step


def test_a_workflows_schedule_job_stays():
    job, step, run = finished_job(days=400)
    Workflow.objects.create(name="nightly", definition=DEFINITION, schedule=job)
    purge()
    assert exists(job)
    assert exists(run) and exists(step)  # its newest run and latest step


def test_a_job_that_started_a_workflow_execution_still_running_stays():
    job, step, run = finished_job(days=400)
    execution = make_execution(ExecutionStatus.RUNNING, days=400)
    Execution.objects.filter(pk=execution.pk).update(started_by=job)
    purge()
    assert exists(job) and exists(step) and exists(run)
    Execution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.SUCCEEDED)
    purge()
    assert not exists(job)
    execution.refresh_from_db()
    assert execution.started_by_id is None  # on_delete=SET_NULL, done by hand


def make_execution(status: str, days: float) -> Execution:
    workflow, _ = Workflow.objects.get_or_create(name="flow", defaults={"definition": DEFINITION})
    version, _ = WorkflowVersion.objects.get_or_create(
        workflow=workflow, version=1, defaults={"definition": DEFINITION}
    )
    finished = None if status == ExecutionStatus.RUNNING else ago(days)
    execution = Execution.objects.create(
        workflow=workflow,
        version=version,
        status=status,
        started_at=ago(days),
        finished_at=finished,
    )
    Execution.objects.filter(pk=execution.pk).update(updated_at=ago(days))
    return execution


def test_an_open_workflow_executions_steps_and_runs_stay():
    running = make_execution(ExecutionStatus.RUNNING, days=100)
    open_step = make_step(execution=running, days=100)
    open_run = make_run(open_step, days=100)
    done = make_execution(ExecutionStatus.SUCCEEDED, days=100)
    done_step = make_step(execution=done, days=100, sequence=1)
    done_run = make_run(done_step, days=100)
    delivery = NotificationDelivery.objects.create(
        event="execution_failed", notifier="mail", target="admins", execution=done, payload={}
    )

    report = purge()

    assert exists(running) and exists(open_step) and exists(open_run)
    assert not exists(done) and not exists(done_step) and not exists(done_run)
    assert report.deleted["executions"] == 1
    delivery.refresh_from_db()
    assert delivery.execution_id is None  # on_delete=SET_NULL, done by hand


def make_classroom(status: str, days: float) -> Classroom:
    classroom = Classroom.objects.create(
        title="Class",
        start=ago(days) - dt.timedelta(hours=1),
        end=ago(days),
        recording_service_ref="room",
        status=status,
    )
    Classroom.objects.filter(pk=classroom.pk).update(updated_at=ago(days))
    return classroom


def test_a_classrooms_steps_stay_until_it_has_finished():
    live = make_classroom(PlanStatus.RUNNING, days=100)
    live_step = make_step(classroom=live, days=100)
    live_run = make_run(live_step, days=100)
    make_step(classroom=live, days=-1, state=StepState.SCHEDULED, sequence=1)
    done = make_classroom(PlanStatus.SUCCEEDED, days=100)
    done_run = make_run(make_step(classroom=done, days=100), days=100)

    report = purge()

    assert exists(live) and exists(live_step) and exists(live_run)
    assert not exists(done) and not exists(done_run)
    assert (report.deleted["classrooms"], report.deleted["steps"]) == (1, 1)


def test_idempotency_records_in_their_window_stay(django_user_model):
    user = django_user_model.objects.create_user("ada")
    fields = {"user": user, "endpoint": "POST /jobs", "request_hash": "x", "response_status": 201}
    expired = IdempotencyRecord.objects.create(
        key="a", expires_at=ago(0.01), response_body={}, **fields
    )
    live = IdempotencyRecord.objects.create(
        key="b", expires_at=ago(-0.5), response_body={}, **fields
    )
    assert purge().deleted["idempotency_records"] == 1
    assert not exists(expired) and exists(live)


def test_the_sweep_forgets_expired_keys_in_bounded_batches(django_user_model, settings):
    """The dispatcher's sweep deletes expired keys SCHEDULES_PURGE_BATCH at a time, each
    batch its own statement and transaction, and keeps the keys still in their window."""
    settings.SCHEDULES_PURGE_BATCH = 4
    user = django_user_model.objects.create_user("ada")
    fields = {"user": user, "endpoint": "POST /jobs", "request_hash": "x", "response_status": 201}
    IdempotencyRecord.objects.bulk_create(
        IdempotencyRecord(key=f"old{i}", expires_at=ago(1), response_body={}, **fields)
        for i in range(10)
    )
    live = IdempotencyRecord.objects.create(
        key="live", expires_at=ago(-0.5), response_body={}, **fields
    )
    with CaptureQueriesContext(connection) as queries:
        assert services.idempotency_purge_expired() == 10
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 4 + 4 + 2
    sizes = [len(re.search(r"IN \(([^)]*)\)", sql).group(1).split(",")) for sql in deletes]
    assert sizes == [4, 4, 2]
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [live.pk]


def test_notification_deliveries_go_by_their_age_and_lose_the_link_to_a_deleted_run():
    job, _step, run = finished_job(days=40)
    common = {"event": "run_finished", "notifier": "mail", "target": "admins", "payload": {}}
    recent = NotificationDelivery.objects.create(run=run, job=job, status="sent", **common)
    old_sent = NotificationDelivery.objects.create(status="sent", **common)
    old_failed = NotificationDelivery.objects.create(status="failed", **common)
    pending = NotificationDelivery.objects.create(status="pending", **common)
    NotificationDelivery.objects.exclude(pk=recent.pk).update(created_at=ago(40))

    purge()

    recent.refresh_from_db()
    assert (recent.run_id, recent.job_id) == (None, None)
    assert not exists(old_sent) and exists(old_failed) and exists(pending)


def test_a_job_run_again_while_the_purge_looks_at_it_stays(monkeypatch):
    """The rules are checked again inside the batch's transaction."""
    job = make_job(status=PlanStatus.FAILED, days=100)
    real = retention_module.Purge.chosen

    def chosen(self: Any, kind: Any, ids: Any, *, lock: bool) -> list[int]:
        if kind.name == "jobs" and lock:  # it was chosen; meanwhile someone runs it again
            Job.objects.filter(pk=job.pk).update(status=PlanStatus.SCHEDULED)
        return real(self, kind, ids, lock=lock)

    monkeypatch.setattr(retention_module.Purge, "chosen", chosen)
    assert purge().deleted["jobs"] == 0
    assert exists(job)


# --- dry run, batches, time limit ---------------------------------------------------------------


def mixed_history() -> None:
    job, _ = live_recurring_job()
    for n in range(6):
        make_run(make_step(job=job, days=40 + n, sequence=n), days=40 + n)
    make_run(make_step(job=job, days=1, sequence=900), days=1)
    for days in (20, 40, 100, 200):
        finished_job(days=days)
        finished_job(status=PlanStatus.FAILED, days=days, run_status=RunStatus.FAILED)
    done = make_classroom(PlanStatus.SUCCEEDED, days=100)
    make_run(make_step(classroom=done, days=100), days=100)
    execution = make_execution(ExecutionStatus.FAILED, days=100)
    make_run(make_step(execution=execution, days=100), days=100, status=RunStatus.FAILED)


def counts() -> dict[str, int]:
    models = (Run, Step, Job, Classroom, Execution, NotificationDelivery, IdempotencyRecord)
    return {model.__name__: model.objects.count() for model in models}


def test_a_dry_run_counts_what_a_purge_deletes_and_deletes_nothing():
    mixed_history()
    before = counts()

    dry = purge(dry_run=True)

    assert counts() == before
    assert dry.batches == 0 and dry.total > 0
    real = purge()
    assert real.deleted == dry.deleted
    assert purge(dry_run=True).total == 0


@dataclass
class Deletes:
    """The DELETE statements run, as (table, rows named)."""

    seen: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith("DELETE FROM "):
            ids = params[0] if connection.vendor == "postgresql" else params
            self.seen.append((sql.split()[2], len(ids)))
        return execute(sql, params, many, context)


@pytest.fixture
def recorder() -> Iterator[tuple[LockRecorder, Deletes]]:
    recorder, deletes = LockRecorder(), Deletes()
    with connection.execute_wrapper(recorder), connection.execute_wrapper(deletes):
        yield recorder, deletes


@pytest.mark.django_db(transaction=True)
def test_each_batch_is_its_own_transaction_of_at_most_batch_size_rows(recorder):
    """Batch 2, five runs and five steps to delete: three transactions each, children
    first, one table per transaction, and every transaction in the lock order."""
    locks, deletes = recorder
    job = make_job(status=PlanStatus.SCHEDULED, days=-1, recurring=True)
    for n in range(5):
        make_run(make_step(job=job, days=40 + n, sequence=n), days=40 + n)
    make_step(job=job, days=-1, state=StepState.SCHEDULED, sequence=10)
    make_run(make_step(job=job, days=1, sequence=9), days=1)
    locks.transactions.clear()

    report = purge(batch_size=2)

    assert deletes.seen == [
        ("schedules_run", 2),
        ("schedules_run", 2),
        ("schedules_run", 1),
        ("schedules_step", 2),
        ("schedules_step", 2),
        ("schedules_step", 1),
    ]
    locks.end()
    per_transaction = [
        [s.table for s in statements if s.sql.startswith("DELETE")]
        for statements in locks.transactions
    ]
    assert [tables for tables in per_transaction if tables] == [["schedules_run"]] * 3 + [
        ["schedules_step"]
    ] * 3
    assert report.batches == 6 and report.deleted["runs"] == report.deleted["steps"] == 5
    assert locks.violations() == []


def test_max_seconds_stops_between_batches_and_the_next_purge_goes_on():
    job, _ = live_recurring_job()
    for n in range(5):
        make_run(make_step(job=job, days=40 + n, sequence=n), days=40 + n)
    make_run(make_step(job=job, days=1, sequence=900), days=1)

    first = purge(batch_size=1, pause=0.2, max_seconds=0.3)

    assert not first.complete and 0 < first.deleted["runs"] < 5
    second = purge(batch_size=1)
    assert second.complete and first.deleted["runs"] + second.deleted["runs"] == 5


# --- settings ---------------------------------------------------------------------------------


def test_the_keep_settings_are_checked(settings):
    assert check_retention() == []
    settings.SCHEDULES_KEEP_FAILED_DAYS = -1
    settings.SCHEDULES_PURGE_BATCH = 0
    errors = check_retention()
    assert [e.id for e in errors] == ["schedules.E201", "schedules.E202"]
    assert "SCHEDULES_KEEP_FAILED_DAYS" in errors[0].msg
    assert "SCHEDULES_PURGE_BATCH" in errors[1].msg


def test_a_bad_keep_variable_stops_start_up_naming_it():
    from scheduler_project.settings import _keep_days

    assert _keep_days("X", "") is None and _keep_days("X", "0") is None
    assert _keep_days("X", " 0.5 ") == 0.5
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(Exception, match="SCHEDULES_KEEP_FAILED_DAYS") as caught:
            _keep_days("SCHEDULES_KEEP_FAILED_DAYS", bad)
        assert type(caught.value).__name__ == "ImproperlyConfigured"


# --- the commands -----------------------------------------------------------------------------


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_purge_command_dry_run_then_purge_as_json():
    finished_job(days=40)
    out, err = run("purge", "--dry-run")
    assert "Dry run: 3 row(s) would be deleted (nothing was)." in out
    assert "runs" in err and "would go" in err  # progress lines on stderr (not a terminal)
    assert Job.objects.count() == 1

    out, _ = run("purge", "--json", "--batch-size", "10", "-v", "0")
    summary = json.loads(out)
    assert summary["deleted"]["jobs"] == summary["deleted"]["steps"] == 1
    assert summary["total"] == 3 and summary["batch_size"] == 10 and summary["complete"]
    assert summary["keep_days"] == {
        "succeeded": 30.0,
        "failed": 90.0,
        "uncertain": 180.0,
        "cancelled": 30.0,
    }
    assert Job.objects.count() == 0


def test_purge_command_older_than():
    finished_job(status=PlanStatus.FAILED, days=2, run_status=RunStatus.FAILED)
    out, _ = run("purge", "--older-than", "36h", "-v", "0")
    assert "Deleted 3 row(s)" in out
    assert "Kept: succeeded 1.5 days, failed 1.5 days" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "3x"], "older-than: '3x' is not an age"),
        (["--older-than", "0d"], "older-than"),
        (["--batch-size", "0"], "batch-size: must be from 1 to 100000"),
        (["--pause", "-1"], "pause"),
        (["--max-seconds", "0"], "max-seconds"),
    ],
)
def test_purge_command_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        run("purge", *args)


def test_schedule_purge_keeps_one_recurring_job():
    out, _ = run("schedule_purge")
    job = Job.objects.get(action="purge")
    assert f"purge job {job.pk} created: At 03:00 every day (UTC)" in out
    assert (job.name, job.cron, job.time_zone, job.status) == (
        PURGE_JOB_NAME,
        "0 3 * * *",
        "UTC",
        PlanStatus.SCHEDULED,
    )
    assert job.steps.get().due_at.astimezone(dt.UTC).hour == 3

    assert "unchanged" in run("schedule_purge")[0]
    out, _ = run("schedule_purge", "--cron", "30 2 * * *", "--max-seconds", "60", "--json")
    data = json.loads(out)
    assert data["change"] == "updated" and data["job"]["id"] == job.pk
    assert data["job"]["payload"] == {"max_seconds": 60.0}
    out, _ = run(
        "schedule_purge",
        "--cron",
        "30 2 * * *",
        "--max-seconds",
        "60",
        "--time-zone",
        "Europe/Paris",
        "--json",
    )
    data = json.loads(out)
    assert data["change"] == "replaced" and data["job"]["time_zone"] == "Europe/Paris"
    assert Job.objects.filter(action="purge").exclude(status=PlanStatus.CANCELLED).count() == 1

    assert "cancelled" in run("schedule_purge", "--remove")[0]
    assert run("schedule_purge", "--remove")[0].strip() == "no purge job"
    with pytest.raises(CommandError, match="cron"):
        run("schedule_purge", "--cron", "every day")


def test_the_purge_job_purges_when_its_step_runs():
    gone = finished_job(days=40)
    job, _ = services.purge_schedule(payload={"batch_size": 5})
    step = job.steps.get()
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    step.refresh_from_db()

    run_row = services.step_execute(step_id=step.pk, version=step.version)

    assert run_row is not None and run_row.status == RunStatus.SUCCEEDED
    assert run_row.result["deleted"]["jobs"] == 1 and run_row.result["batch_size"] == 5
    assert not any(exists(row) for row in gone)
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED  # its next occurrence is planned


def test_the_purge_action_takes_no_ages():
    with pytest.raises(Exception, match="older_than"):
        services.purge_schedule(payload={"older_than": "1d"})


@pytest.mark.parametrize("name", ["purge", "schedule_purge"])
def test_help_explains_every_option_and_the_exit_status(name):
    command = load_command_class("schedules", name)
    parser = command.create_parser("manage.py", name)
    text = " ".join(parser.format_help().split())
    assert "Exit status: 0 on success; 1 on an error" in text
    for action in parser._actions:
        assert action.help, f"{name}: {action.dest} has no help"


def test_purge_progress_is_a_bar_on_a_terminal(monkeypatch):
    finished_job(days=40)
    err = StringIO()
    monkeypatch.setattr(err, "isatty", lambda: True, raising=False)
    call_command("purge", stdout=StringIO(), stderr=err)
    lines = err.getvalue()
    assert "\r[########################] 100% runs" in lines
    assert "1 of 1 looked at, 1 deleted" in lines


def test_the_purge_writes_in_the_background_on_postgresql_and_resets_it_after():
    """On PostgreSQL the purge's session commits without waiting for the disk, hands its
    pages to the disk as it goes and compresses its WAL (BACKGROUND_WRITES; the tests
    connect as a superuser, who may set wal_compression), then puts all back; SQLite has
    no such settings and gets no statement for them."""
    finished_job(days=40)
    seen: list[tuple[str, str, str]] = []

    def settings_now() -> tuple[str, str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('synchronous_commit'), "
                "current_setting('backend_flush_after'), current_setting('wal_compression')"
            )
            return cursor.fetchone()

    if connection.vendor == "postgresql":
        before = settings_now()
        assert before == ("on", "0", "off")
        report = purge(progress=lambda _p: seen.append(settings_now()))
        assert report.deleted["runs"] == 1
        assert seen and set(seen) == {("off", "256kB", "lz4")}
        assert settings_now() == before
    else:
        with CaptureQueriesContext(connection) as queries:
            assert purge().deleted["runs"] == 1
        assert not [q for q in queries if q["sql"].upper().startswith(("SET", "RESET"))]


def test_a_role_that_may_not_set_wal_compression_purges_without_it():
    """wal_compression is a superuser's setting: a role without the right to set it
    purges with the other settings, and is not refused."""
    if connection.vendor != "postgresql":
        assert purge().total == 0  # nothing to purge; SQLite has no such setting
        return
    finished_job(days=40)
    seen: list[str] = []
    role = f"schedules_plain_{os.getpid()}"  # roles are the server's: one of this process
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        cursor.execute(f"SET ROLE {role}")
    try:
        report = purge(progress=lambda _p: seen.append(_setting("wal_compression")))
        assert report.deleted["runs"] == 1
        assert seen and set(seen) == {"off"}
        assert _setting("synchronous_commit") == "on"  # reset after, as before
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
            cursor.execute(f"DROP OWNED BY {role}")
            cursor.execute(f"DROP ROLE {role}")


def _setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return str(cursor.fetchone()[0])
