"""Writes on one-off jobs: schedule, reschedule, cancel, run now."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..engines import engine_name_for_precision
from ..models import Job, PlanStatus, Precision, Step, StepState
from ..validation import (
    Errors,
    check_action_payload,
    check_due,
    check_max_attempts,
    check_precision,
    check_time_zone,
)
from .sync import steps_sync_on_commit

NAME_MAX = 200


def job_validate(
    *,
    action: str,
    payload: Any,
    due_at: Any,
    precision: str,
    max_attempts: Any,
    time_zone: str,
    name: str,
    now: dt.datetime | None = None,
) -> tuple[dict[str, Any], dt.datetime]:
    """Check a job's fields; return the normalized payload and the due time in UTC.

    Raises ``ValidationError`` with one message per offending field.
    """
    now = now or timezone.now()
    errors = Errors()
    if len(name) > NAME_MAX:
        errors.add("name", f"is {len(name)} characters; the limit is {NAME_MAX}")
    due = check_due(errors, "due_at", due_at, now=now)
    check_precision(errors, "precision", precision)
    check_max_attempts(errors, "max_attempts", max_attempts)
    check_time_zone(errors, "time_zone", time_zone)
    normalized = check_action_payload(errors, action, payload)
    errors.raise_if_any()
    assert due is not None
    return normalized, due


@transaction.atomic
def job_schedule(
    *,
    action: str,
    due_at: dt.datetime,
    payload: dict[str, Any] | None = None,
    precision: str = Precision.PRECISE,
    max_attempts: int | None = None,
    name: str = "",
    time_zone: str = "UTC",
    owner: User | None = None,
) -> Job:
    """Schedule ``action`` with ``payload`` at ``due_at`` (timezone-aware)."""
    if max_attempts is None:
        max_attempts = settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS
    normalized, due = job_validate(
        action=action,
        payload=payload or {},
        due_at=due_at,
        precision=precision,
        max_attempts=max_attempts,
        time_zone=time_zone,
        name=name,
    )
    job = Job.objects.create(
        name=name,
        action=action,
        payload=normalized,
        due_at=due,
        time_zone=time_zone,
        precision=precision,
        max_attempts=max_attempts,
        owner=owner,
    )
    # post_save on Step queues the engine sync for after the commit.
    Step.objects.create(
        job=job,
        action=action,
        due_at=due,
        precision=precision,
        engine=engine_name_for_precision(precision),
        max_attempts=max_attempts,
    )
    return job


def email_schedule(
    *,
    to: list[str],
    subject: str,
    due_at: dt.datetime,
    body: str = "",
    html_body: str = "",
    template: str = "",
    context: dict[str, Any] | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    from_email: str = "",
    **job_options: Any,
) -> Job:
    """Schedule an email (see workers.actions.email.EmailPayload for the fields)."""
    payload: dict[str, Any] = {"to": to, "subject": subject}
    optional = {
        "body": body,
        "html_body": html_body,
        "template": template,
        "context": context,
        "cc": cc,
        "bcc": bcc,
        "from_email": from_email,
    }
    payload.update({k: v for k, v in optional.items() if v})
    return job_schedule(action="send_email", payload=payload, due_at=due_at, **job_options)


def _pending_step(job: Job) -> Step | None:
    return (
        Step.objects.select_for_update()
        .filter(job=job, state__in=[StepState.SCHEDULED, StepState.QUEUED])
        .first()
    )


def _refence(step: Step, **changes: Any) -> None:
    """Bump the step's version (the fence) and save: the old timer and message go stale."""
    step.version = F("version") + 1
    for field, value in changes.items():
        setattr(step, field, value)
    step.save()
    step.refresh_from_db()


@transaction.atomic
def job_update(
    *,
    job: Job,
    payload: dict[str, Any] | None = None,
    name: str | None = None,
    max_attempts: int | None = None,
    precision: str | None = None,
) -> Job:
    """Edit a pending job's payload, name, attempts or precision.

    The next run reads the new values. A new precision moves the pending step
    to the engine configured for it: the old timer is disarmed and a new one
    armed under a new version, so at most one of them can run the step.
    """
    job = Job.objects.select_for_update().get(pk=job.pk)
    errors = Errors()
    if job.status not in (PlanStatus.SCHEDULED,):
        errors.add("status", f"the job is {job.status}; only a scheduled job can be edited")
    errors.raise_if_any()
    new_payload = job.payload if payload is None else payload
    normalized, _ = job_validate(
        action=job.action,
        payload=new_payload,
        due_at=job.due_at,
        precision=job.precision if precision is None else precision,
        max_attempts=job.max_attempts if max_attempts is None else max_attempts,
        time_zone=job.time_zone,
        name=job.name if name is None else name,
        now=min(timezone.now(), job.due_at),
    )
    if precision is not None and precision != job.precision:
        job.precision = precision
        step = _pending_step(job)
        if step is not None:
            engine = engine_name_for_precision(precision)
            _refence(
                step, precision=precision, engine=engine, state=StepState.SCHEDULED, queued_at=None
            )
    job.payload = normalized
    if name is not None:
        job.name = name
    if max_attempts is not None:
        job.max_attempts = max_attempts
        Step.objects.filter(job=job).update(max_attempts=max_attempts)
    job.save()
    return job


@transaction.atomic
def job_reschedule(*, job: Job, due_at: dt.datetime) -> Job:
    """Move a pending job to ``due_at``. The old timer is disarmed and its message skipped."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    errors = Errors()
    due = check_due(errors, "due_at", due_at, now=timezone.now())
    step = _pending_step(job)
    if step is None:
        errors.add("due_at", f"the job is {job.status}; only a scheduled job can be rescheduled")
    errors.raise_if_any()
    assert step is not None and due is not None
    _refence(step, due_at=due, state=StepState.SCHEDULED, queued_at=None)
    job.due_at = due
    job.status = PlanStatus.SCHEDULED
    job.save(update_fields=["due_at", "status", "updated_at"])
    return job


@transaction.atomic
def job_cancel(*, job: Job) -> Job:
    """Cancel a job: its pending step never runs. An attempt already running finishes."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    if job.status in (PlanStatus.SUCCEEDED, PlanStatus.FAILED, PlanStatus.CANCELLED):
        raise ValidationError(
            {"status": f"the job is already {job.status}; there is nothing to cancel"}
        )
    for step in Step.objects.select_for_update().filter(
        job=job, state__in=[StepState.SCHEDULED, StepState.QUEUED, StepState.RUNNING]
    ):
        _refence(step, state=StepState.CANCELLED, lease_until=None)
    job.status = PlanStatus.CANCELLED
    job.save(update_fields=["status", "updated_at"])
    return job


@transaction.atomic
def job_run_now(*, job: Job) -> Job:
    """Run a scheduled job now, or run a failed job again (with fresh attempts)."""
    job = Job.objects.select_for_update().get(pk=job.pk)
    now = timezone.now()
    step = _pending_step(job)
    if step is None and job.status == PlanStatus.FAILED:
        step = Step.objects.select_for_update().filter(job=job).order_by("-pk").first()
        if step is not None:
            step.attempts = 0
    if step is None:
        raise ValidationError(
            {"status": f"the job is {job.status}; only a scheduled or failed job can run now"}
        )
    _refence(step, due_at=now, state=StepState.SCHEDULED, queued_at=None, lease_until=None)
    job.due_at = now
    job.status = PlanStatus.SCHEDULED
    job.save(update_fields=["due_at", "status", "updated_at"])
    return job


@transaction.atomic
def job_schedule_many(*, jobs: list[dict[str, Any]], owner: User | None = None) -> list[Job]:
    """Schedule many one-off jobs in one transaction (each dict takes job_schedule's arguments).

    All or nothing: if any job is invalid, nothing is stored and the
    ``ValidationError`` names the job's index, e.g. ``jobs[3].due_at``.
    """
    now = timezone.now()
    errors = Errors()
    rows: list[Job] = []
    for index, spec in enumerate(jobs):
        unknown = set(spec) - {
            "action",
            "payload",
            "due_at",
            "precision",
            "max_attempts",
            "name",
            "time_zone",
        }
        if unknown:
            errors.add(f"jobs[{index}]", f"unknown field(s): {', '.join(sorted(unknown))}")
            continue
        options = {
            "payload": spec.get("payload") or {},
            "precision": spec.get("precision", Precision.PRECISE),
            "max_attempts": spec.get("max_attempts", settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS),
            "time_zone": spec.get("time_zone", "UTC"),
            "name": spec.get("name", ""),
        }
        try:
            normalized, due = job_validate(
                action=spec.get("action", ""), due_at=spec.get("due_at"), now=now, **options
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                for message in messages:
                    errors.add(f"jobs[{index}].{field}", message)
            continue
        options["payload"] = normalized
        rows.append(Job(action=spec["action"], due_at=due, owner=owner, **options))
    errors.raise_if_any()
    created = Job.objects.bulk_create(rows, batch_size=1000)
    steps = Step.objects.bulk_create(
        [
            Step(
                job=job,
                action=job.action,
                due_at=job.due_at,
                precision=job.precision,
                engine=engine_name_for_precision(job.precision),
                max_attempts=job.max_attempts,
            )
            for job in created
        ],
        batch_size=1000,
    )
    # bulk_create sends no post_save: sync explicitly after the commit.
    steps_sync_on_commit(step.pk for step in steps)
    return created
