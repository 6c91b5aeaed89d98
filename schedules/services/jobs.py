"""Writes on jobs: schedule (once, or by a rate or cron rule), update, reschedule, cancel,
run now."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, TypedDict, Unpack

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from workers.actions import REGISTRY

from .. import recurrence
from ..engines import engine_name_for_precision
from ..models import (
    WAITING_STATES,
    Job,
    MissedPolicy,
    OverlapPolicy,
    PlanStatus,
    Precision,
    RateUnit,
    ScheduleType,
    Step,
    StepState,
)
from ..notifications.webhook import check_webhook_url
from ..validation import (
    Errors,
    check_action_payload,
    check_choice,
    check_due,
    check_job_action,
    check_max_attempts,
    check_precision,
    check_time_zone,
    seconds_text,
    values_of,
)
from .inserts import job_and_step_insert, jobs_and_steps_insert
from .plans import job_pending_step, job_plan_step
from .transactions import retrying

NAME_MAX = 200
#: The rule's fields: changing one re-plans a recurring job's next occurrence.
RULE_FIELDS = (
    "schedule_type",
    "rate_every",
    "rate_unit",
    "cron",
    "starts_at",
    "ends_at",
    "max_runs",
)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a job runs, and what it does when behind, overlapping or not done yet.

    ``once`` runs at the job's ``due_at``; ``rate`` and ``cron`` follow a rule
    (``schedules.recurrence``) from ``starts_at`` (default: now) to ``ends_at``
    or ``max_runs``. The poll fields apply to actions that poll (``http_check``).
    """

    schedule_type: str = ScheduleType.ONCE
    rate_every: int | None = None
    rate_unit: str = ""
    cron: str = ""
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    max_runs: int | None = None
    missed_policy: str = MissedPolicy.RUN_ONCE
    overlap_policy: str = OverlapPolicy.SKIP
    poll_interval: int | None = None
    poll_max_checks: int | None = None
    poll_timeout: int | None = None
    pause_after_failures: int | None = None

    @classmethod
    def of(cls, job: Job) -> Schedule:
        return cls(**{f.name: getattr(job, f.name) for f in dataclasses.fields(cls)})

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCHEDULE_FIELDS}


SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(Schedule))


class ScheduleFields(TypedDict, total=False):
    """``Schedule``'s fields as keyword arguments of ``job_schedule`` and ``job_update``."""

    schedule_type: str
    rate_every: int | None
    rate_unit: str
    cron: str
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    max_runs: int | None
    missed_policy: str
    overlap_policy: str
    poll_interval: int | None
    poll_max_checks: int | None
    poll_timeout: int | None
    pause_after_failures: int | None


#: The largest value a positive integer column holds on every database.
INT_MAX = 2**31 - 1


def _whole(
    errors: Errors, field: str, value: Any, *, maximum: int = INT_MAX, rule: str = ""
) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        errors.add(field, f"must be a whole number from 1 to {maximum}{rule}")


def _check_poll(errors: Errors, action: str, schedule: Schedule) -> None:
    """Poll limits where the action polls, none where it does not."""
    given = {
        name: getattr(schedule, name)
        for name in ("poll_interval", "poll_max_checks", "poll_timeout")
        if getattr(schedule, name) is not None
    }
    spec = REGISTRY.get(action)
    if spec is None:
        return  # the action's own error says it is unknown
    if not spec.polls:
        polling = sorted(name for name, a in REGISTRY.items() if a.polls)
        for name in given:
            errors.add(
                name,
                f"{action} never reports 'not done', so it does not poll: leave this empty "
                f"(actions that poll: {', '.join(polling) or 'none'})",
            )
        return
    minimum = settings.SCHEDULES_MIN_POLL_INTERVAL
    longest: int = settings.SCHEDULES_MAX_AHEAD
    within = " seconds (at most SCHEDULES_MAX_AHEAD)"
    if schedule.poll_interval is None:
        errors.add("poll_interval", f"{action} polls: give the seconds between checks")
    elif isinstance(schedule.poll_interval, int) and 1 <= schedule.poll_interval < minimum:
        errors.add(
            "poll_interval",
            f"{schedule.poll_interval} s is faster than the minimum of {minimum} s "
            "(SCHEDULES_MIN_POLL_INTERVAL)",
        )
    _whole(errors, "poll_interval", schedule.poll_interval, maximum=longest, rule=within)
    _whole(errors, "poll_max_checks", schedule.poll_max_checks)
    _whole(errors, "poll_timeout", schedule.poll_timeout, maximum=longest, rule=within)
    if schedule.poll_max_checks is None and schedule.poll_timeout is None:
        errors.add(
            "poll_max_checks",
            "a poll needs a limit: give poll_max_checks, poll_timeout or both, so a check that "
            "never reports done does not run forever",
        )


def _check_rule(
    errors: Errors, schedule: Schedule, *, time_zone: str, run_count: int, now: dt.datetime
) -> dt.datetime | None:
    """A recurring schedule's rule is valid and has an occurrence after now; its first."""
    kind = schedule.schedule_type
    other = {
        ScheduleType.RATE: ("cron",),
        ScheduleType.CRON: ("rate_every", "rate_unit"),
    }[ScheduleType(kind)]
    for name in other:
        if getattr(schedule, name) not in (None, ""):
            errors.add(name, f"applies to a {name.split('_')[0]} rule, not to a {kind} rule")
    if kind == ScheduleType.RATE:
        if schedule.rate_every is None:
            errors.add("rate_every", "a rate rule needs it: run every how many rate units?")
        if not schedule.rate_unit:
            errors.add("rate_unit", f"a rate rule needs it: one of {', '.join(RateUnit.values)}")
    elif not schedule.cron.strip():
        errors.add("cron", "a cron rule needs a 5-field expression, e.g. '0 9 * * 1-5'")
    _whole(errors, "rate_every", schedule.rate_every)
    _whole(errors, "max_runs", schedule.max_runs, rule=" (leave it empty for no limit)")
    if any(name in errors for name in RULE_FIELDS):
        return None
    rule = recurrence.Rule(
        kind=kind,
        starts_at=schedule.starts_at or now,
        every=schedule.rate_every or 0,
        unit=schedule.rate_unit,
        cron=schedule.cron,
        time_zone=time_zone,
        ends_at=schedule.ends_at,
        max_runs=schedule.max_runs,
    )
    try:
        recurrence.validate(rule)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            if field not in errors:  # e.g. time_zone, already checked for every job
                for message in messages:
                    errors.add(field, message)
        return None
    if errors.by_field:
        return None
    after = max(rule.starts_at, now) - dt.timedelta(microseconds=1)
    first = recurrence.next_after(rule, after, runs_so_far=run_count)
    if first is None:
        unbounded = recurrence.next_after(dataclasses.replace(rule, max_runs=None), after)
        if unbounded is not None and rule.max_runs is not None:
            errors.add(
                "max_runs",
                f"the job has run {run_count} time(s) already: raise max_runs for more",
            )
        else:
            errors.add("ends_at", "the rule has no occurrence after now")
        return None
    ahead = settings.SCHEDULES_MAX_AHEAD
    if first > now + dt.timedelta(seconds=ahead):
        errors.add(
            "starts_at",
            f"the first occurrence, {first.isoformat(timespec='seconds')}, is more than "
            f"{seconds_text(ahead)} ahead (SCHEDULES_MAX_AHEAD)",
        )
    return first


def _check_options(errors: Errors, action: str, schedule: Schedule) -> None:
    """The policies and poll limits, which apply whatever the rule."""
    check_choice(errors, "missed_policy", schedule.missed_policy, MissedPolicy)
    check_choice(errors, "overlap_policy", schedule.overlap_policy, OverlapPolicy)
    _check_poll(errors, action, schedule)
    if schedule.pause_after_failures is not None:
        if schedule.schedule_type == ScheduleType.ONCE:
            errors.add(
                "pause_after_failures",
                "applies to a recurring job only (a one-off job ends when it fails)",
            )
        else:
            _whole(
                errors,
                "pause_after_failures",
                schedule.pause_after_failures,
                rule=" (failed occurrences in a row; leave it empty to never pause)",
            )


def _check_timing(
    errors: Errors,
    schedule: Schedule,
    *,
    due_at: Any,
    time_zone: str,
    run_count: int,
    now: dt.datetime,
) -> dt.datetime | None:
    """A due time for a one-off job, a rule for a recurring one; the first due time (UTC)."""
    check_choice(errors, "schedule_type", schedule.schedule_type, ScheduleType)
    if schedule.schedule_type == ScheduleType.ONCE:
        for name in RULE_FIELDS[1:]:
            if getattr(schedule, name) not in (None, ""):
                errors.add(name, "applies to a recurring job only (schedule_type rate or cron)")
        if due_at is None:
            errors.add("due_at", "a one-off job needs it: when should it run?")
            return None
        return check_due(errors, "due_at", due_at, now=now)
    if schedule.schedule_type not in values_of(ScheduleType):
        return None
    if due_at is not None:
        errors.add(
            "due_at",
            "a recurring job's times come from its rule: leave due_at empty "
            "(starts_at sets when the rule begins)",
        )
    return _check_rule(errors, schedule, time_zone=time_zone, run_count=run_count, now=now)


def _check_fields(
    errors: Errors,
    *,
    action: str,
    payload: Any,
    precision: str,
    max_attempts: Any,
    time_zone: str,
    name: str,
) -> dict[str, Any]:
    """Every job's own fields; returns the payload normalized by the action's schema."""
    if len(name) > NAME_MAX:
        errors.add("name", f"is {len(name)} characters; the limit is {NAME_MAX}")
    check_precision(errors, "precision", precision)
    check_max_attempts(errors, "max_attempts", max_attempts)
    check_time_zone(errors, "time_zone", time_zone)
    check_job_action(errors, "action", action)
    return check_action_payload(errors, action, payload)


def job_validate(
    *,
    action: str,
    payload: Any,
    due_at: Any,
    precision: str,
    max_attempts: Any,
    time_zone: str,
    name: str,
    schedule: Schedule | None = None,
    run_count: int = 0,
    now: dt.datetime | None = None,
    webhook_url: Any = "",
) -> tuple[dict[str, Any], dt.datetime]:
    """Check a job's fields; return the normalized payload and its first due time in UTC.

    Raises ``ValidationError`` with one message per offending field.
    """
    now = now or timezone.now()
    errors = Errors()
    normalized = _check_fields(
        errors,
        action=action,
        payload=payload,
        precision=precision,
        max_attempts=max_attempts,
        time_zone=time_zone,
        name=name,
    )
    check_webhook_url(errors, "webhook_url", webhook_url)
    schedule = schedule or Schedule()
    _check_options(errors, action, schedule)
    due = _check_timing(
        errors, schedule, due_at=due_at, time_zone=time_zone, run_count=run_count, now=now
    )
    errors.raise_if_any()
    assert due is not None
    return normalized, due


def job_schedule(
    *,
    action: str,
    due_at: dt.datetime | None = None,
    payload: dict[str, Any] | None = None,
    precision: str = Precision.SECONDS,
    max_attempts: int | None = None,
    name: str = "",
    time_zone: str = "UTC",
    owner: User | None = None,
    webhook_url: str = "",
    **schedule_fields: Unpack[ScheduleFields],
) -> Job:
    """Schedule ``action`` with ``payload``: once at ``due_at`` (timezone-aware), or by a
    rate or cron rule (``schedule_type`` and the other ``Schedule`` fields). Only the
    first step is created; a recurring job plans each next occurrence as it goes.
    ``webhook_url`` also receives the job's alerts (docs/alerts.md)."""
    if max_attempts is None:
        max_attempts = settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS
    now = timezone.now()
    schedule = Schedule(**schedule_fields)
    normalized, due = job_validate(
        action=action,
        payload=payload or {},
        due_at=due_at,
        precision=precision,
        max_attempts=max_attempts,
        time_zone=time_zone,
        name=name,
        schedule=schedule,
        now=now,
        webhook_url=webhook_url,
    )
    fields = schedule.fields()
    if schedule.schedule_type != ScheduleType.ONCE:
        fields["starts_at"] = (schedule.starts_at or now).astimezone(dt.UTC)
        fields["ends_at"] = schedule.ends_at.astimezone(dt.UTC) if schedule.ends_at else None
    job = Job(
        name=name,
        action=action,
        payload=normalized,
        due_at=due,
        time_zone=time_zone,
        precision=precision,
        max_attempts=max_attempts,
        owner=owner,
        webhook_url=(webhook_url or "").strip(),
        **fields,
    )
    # One statement on PostgreSQL, one write transaction on SQLite (services.inserts).
    return job_and_step_insert(job, due)


def email_schedule(
    *,
    to: list[str],
    subject: str,
    due_at: dt.datetime | None = None,
    body: str = "",
    html_body: str = "",
    template: str = "",
    context: dict[str, Any] | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    from_email: str = "",
    **job_options: Any,
) -> Job:
    """Schedule an email (see workers.actions.email.EmailPayload for the fields): once at
    ``due_at``, or by a rule given in ``job_options`` (``job_schedule``'s arguments)."""
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


def _refence(step: Step, **changes: Any) -> None:
    """Bump the step's version (the fence) and save: the old timer and message go stale,
    and whoever held the step in flight no longer does."""
    step.version = F("version") + 1
    step.holder, step.lease_until = "", None
    for field, value in changes.items():
        setattr(step, field, value)
    step.save()
    step.refresh_from_db()


def _replan(job: Job, first: dt.datetime) -> None:
    """A recurring job's rule changed: its planned next occurrence moves to ``first``.

    An occurrence still going (a run, a retry, a next check) finishes under the old
    plan; with overlap ``skip`` and nothing planned, it plans the next one from the
    new rule when it is over.
    """
    planned = job_pending_step(job)
    if planned is not None and planned.poll_number == 0:
        _refence(planned, state=StepState.CANCELLED)
    elif job.status == PlanStatus.RUNNING or planned is not None:
        return
    job.due_at = first
    job_plan_step(job, first, sequence=job.last_sequence + 1)


def job_held_steps(job: Job) -> list[Step]:
    """The steps a pause holds (state ``paused``), locked in ascending id (the lock order)."""
    return list(
        Step.objects.select_for_update(no_key=True)
        .filter(job=job, state=StepState.PAUSED)
        .order_by("pk")
    )


def _replan_held(job: Job, held: list[Step], first: dt.datetime) -> None:
    """A paused recurring job's rule changed: its held next occurrence moves to the new
    rule's first occurrence after now, still held (resume arms it). A retry or a next
    check held of an occurrence that had begun is left to finish under the old plan."""
    fresh = [s for s in held if s.poll_number == 0 and s.attempts == 0]
    for step in fresh:
        _refence(step, state=StepState.CANCELLED)
    if fresh or not held:
        job.due_at = first
        job_plan_step(job, first, sequence=job.last_sequence + 1, held=True)


@retrying
def job_update(
    *,
    job: Job,
    payload: dict[str, Any] | None = None,
    name: str | None = None,
    max_attempts: int | None = None,
    precision: str | None = None,
    webhook_url: str | None = None,
    **schedule_fields: Unpack[ScheduleFields],
) -> Job:
    """Edit a job that has not ended: payload, name, attempts, precision, webhook URL, and
    for a recurring job its rule and policies; poll limits where the action polls.

    The next run reads the new values. A new precision moves the pending step
    to the engine configured for it: the old timer is disarmed and a new one
    armed under a new version, so at most one of them can run the step. A new
    rule re-plans the next occurrence (the first one after now).
    """
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    # Every step not run yet, locked in ascending id up front: the pending one (latest
    # occurrence and check first), or a paused job's held ones.
    waiting = list(
        Step.objects.select_for_update(no_key=True)
        .filter(job=job, state__in=WAITING_STATES)
        .order_by("pk")
    )
    pending = max(
        (s for s in waiting if s.state != StepState.PAUSED),
        key=lambda step: (step.sequence, step.poll_number),
        default=None,
    )
    held = [s for s in waiting if s.state == StepState.PAUSED]
    errors = Errors()
    recurring = job.schedule_type != ScheduleType.ONCE
    editable = (
        (PlanStatus.SCHEDULED, PlanStatus.RUNNING, PlanStatus.PAUSED)
        if recurring
        else (PlanStatus.SCHEDULED, PlanStatus.PAUSED)
    )
    if job.status not in editable:
        errors.add(
            "status",
            f"the job is {job.status}; only a "
            f"{'scheduled, running or paused recurring' if recurring else 'scheduled or paused'}"
            " job can be edited",
        )
    new_type = schedule_fields.get("schedule_type", job.schedule_type)
    if (new_type == ScheduleType.ONCE) != (not recurring):
        errors.add(
            "schedule_type",
            "a job cannot change between one-off and recurring: cancel it and schedule another",
        )
    errors.raise_if_any()
    schedule = dataclasses.replace(Schedule.of(job), **schedule_fields)
    rule_changed = recurring and any(
        name in schedule_fields and schedule_fields[name] != getattr(job, name)  # type: ignore[literal-required]
        for name in RULE_FIELDS
    )
    now = timezone.now()
    normalized = _check_fields(
        errors,
        action=job.action,
        payload=job.payload if payload is None else payload,
        precision=job.precision if precision is None else precision,
        max_attempts=job.max_attempts if max_attempts is None else max_attempts,
        time_zone=job.time_zone,
        name=job.name if name is None else name,
    )
    _check_options(errors, job.action, schedule)
    if webhook_url is not None:
        job.webhook_url = check_webhook_url(errors, "webhook_url", webhook_url)
    first = None
    if rule_changed:
        if schedule.starts_at is None:
            schedule = dataclasses.replace(schedule, starts_at=job.starts_at)
        first = _check_rule(
            errors, schedule, time_zone=job.time_zone, run_count=job.run_count, now=now
        )
    errors.raise_if_any()
    if precision is not None and precision != job.precision:
        job.precision = precision
        engine = engine_name_for_precision(precision)
        if pending is not None:
            _refence(
                pending,
                precision=precision,
                engine=engine,
                state=StepState.SCHEDULED,
                queued_at=None,
            )
        for step in held:  # no timer to move: resuming arms it on its new engine
            _refence(step, precision=precision, engine=engine)
    for field, value in schedule.fields().items():
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC)
        setattr(job, field, value)
    job.payload = normalized
    if name is not None:
        job.name = name
    if max_attempts is not None:
        job.max_attempts = max_attempts
        Step.objects.filter(job=job, state__in=WAITING_STATES).update(max_attempts=max_attempts)
    if first is not None:
        if job.status == PlanStatus.PAUSED:
            _replan_held(job, held, first)
        else:
            _replan(job, first)
    job.save()
    return job


@retrying
def job_reschedule(*, job: Job, due_at: dt.datetime) -> Job:
    """Move a pending job to ``due_at``. The old timer is disarmed and its message skipped."""
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    errors = Errors()
    if job.schedule_type != ScheduleType.ONCE:
        errors.add(
            "due_at",
            "a recurring job's times come from its rule: change the rule (e.g. starts_at, "
            "rate_every or cron) instead, or run it now",
        )
        errors.raise_if_any()
    due = check_due(errors, "due_at", due_at, now=timezone.now())
    step = job_pending_step(job)
    paused = job.status == PlanStatus.PAUSED
    if paused:  # its held step moves, still held: resuming arms it for the new time
        step = max(job_held_steps(job), key=lambda s: s.poll_number, default=None)
    if step is None:
        errors.add(
            "due_at",
            f"the job is {job.status}; only a scheduled or paused job can be rescheduled",
        )
    errors.raise_if_any()
    assert step is not None and due is not None
    if paused:
        _refence(step, due_at=due)
    else:
        _refence(step, due_at=due, state=StepState.SCHEDULED, queued_at=None)
        job.status = PlanStatus.SCHEDULED
    job.due_at = due
    job.save(update_fields=["due_at", "status", "updated_at"])
    return job


@retrying
def job_cancel(*, job: Job) -> Job:
    """Cancel a job: its pending (or held) step never runs. An attempt already running
    finishes."""
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    if job.status in (PlanStatus.SUCCEEDED, PlanStatus.FAILED, PlanStatus.CANCELLED):
        raise ValidationError(
            {"status": f"the job is already {job.status}; there is nothing to cancel"}
        )
    for step in (
        Step.objects.select_for_update(no_key=True)
        .filter(job=job, state__in=[*WAITING_STATES, StepState.RUNNING])
        .order_by("pk")  # the lock order: several steps in ascending id
    ):
        _refence(step, state=StepState.CANCELLED)
    job.status = PlanStatus.CANCELLED
    job.save(update_fields=["status", "updated_at"])
    return job


@retrying
def job_run_now(*, job: Job) -> Job:
    """Run a scheduled job now, or run a failed job again (with fresh attempts)."""
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    now = timezone.now()
    step = job_pending_step(job)
    if step is None and job.status == PlanStatus.FAILED:
        step = (
            Step.objects.select_for_update(no_key=True)
            .filter(job=job)
            .order_by("-sequence", "-poll_number")
            .first()
        )
        if step is not None:
            step.attempts = 0
    if step is None and job.status == PlanStatus.PAUSED:
        raise ValidationError(
            {"status": "the job is paused: resume it first (it then runs by its schedule)"}
        )
    if step is None:
        raise ValidationError(
            {"status": f"the job is {job.status}; only a scheduled or failed job can run now"}
        )
    _refence(step, due_at=now, state=StepState.SCHEDULED, queued_at=None)
    job.due_at = now
    job.status = PlanStatus.SCHEDULED
    job.save(update_fields=["due_at", "status", "updated_at"])
    return job


@retrying
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
            "webhook_url",
        }
        if unknown:
            errors.add(f"jobs[{index}]", f"unknown field(s): {', '.join(sorted(unknown))}")
            continue
        options = {
            "payload": spec.get("payload") or {},
            "precision": spec.get("precision", Precision.SECONDS),
            "max_attempts": spec.get("max_attempts", settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS),
            "time_zone": spec.get("time_zone", "UTC"),
            "name": spec.get("name", ""),
            "webhook_url": spec.get("webhook_url") or "",
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
        options["webhook_url"] = options["webhook_url"].strip()
        rows.append(Job(action=spec["action"], due_at=due, owner=owner, **options))
    errors.raise_if_any()
    # COPY on PostgreSQL, executemany on SQLite; one wake-up (services.inserts).
    return jobs_and_steps_insert(rows, [job.due_at for job in rows])
