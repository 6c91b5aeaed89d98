"""Pause and resume: a job, a classroom or a workflow's rule holds still, then goes on.

Pausing holds every step that has not started (scheduled, or queued on its way to a
worker): each moves to ``paused`` under a new version (the fence), so its timer is
disarmed after the commit (``steps_sync``), on whatever engine held it, and a message
already on its way is skipped. A step already running is not interrupted: its attempt
finishes and is recorded, and the record keeps the owner paused and arms nothing (a
retry or a next check is written held, and a recurring job's next occurrence is not
planned: ``plans.step_settled``). Pausing what is paused, or resuming what is not,
does nothing.

Resuming arms what was held, re-planned (docs/operations.md, "Pause and resume"):

* a one-off job: its held step, at its due time, or now if that passed while paused
  (it runs at resume, as ``run_once`` would);
* a recurring job: a held retry or next check of an occurrence that had begun goes on
  (now, if its time passed); then only the next occurrence is armed: the held one or,
  if none is held, the one after the last occurrence. If it fell due while paused the
  missed policy decides: ``run_once`` and ``run_all`` arm it at its own time, so it is
  released at once and the worker runs it once for all the missed ones, or each in
  turn; ``skip`` arms the first occurrence after now instead;
* a classroom: held pings whose time passed are dropped (never sent late); a start
  whose time passed records from now if the class has not ended; the stop is armed at
  the end, or now if the end passed (a recording that started is stopped). A class
  that ended while paused before its recording started is cancelled.

Locks follow the one lock order (docs/architecture.md): the owner first (a workflow,
then its rule's job; a job; a classroom), then its steps in ascending id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from .. import recurrence
from ..models import (
    ENDED_PLAN_STATES,
    PAUSE_REASON_MAX,
    PENDING_STATES,
    Classroom,
    Job,
    MissedPolicy,
    PlanStatus,
    Step,
    StepState,
    Workflow,
)
from ..selectors import rule_for
from ..validation import Errors
from .classrooms import PING, RECORDING_STARTED, START, UNHELD, _Plan, _plan_write
from .jobs import _refence, job_held_steps
from .plans import job_plan_step
from .sync import steps_sync_on_commit
from .transactions import retrying


def _check(errors: Errors, what: str, status: str, verb: str, reason: Any = "") -> str:
    """Refuse an ended plan and a bad reason (naming the field and the rule)."""
    if status in ENDED_PLAN_STATES:
        ended = "" if status == PlanStatus.CANCELLED else ": it has ended"
        errors.add("status", f"a {status} {what} cannot be {verb}{ended}")
    if not isinstance(reason, str):
        errors.add("reason", "must be text")
        return ""
    text = reason.strip()
    if len(text) > PAUSE_REASON_MAX:
        errors.add("reason", f"is {len(text)} characters; the limit is {PAUSE_REASON_MAX}")
    return text


def _rearm(step: Step, now: dt.datetime) -> None:
    """A held step goes back to its engine under a new version: at its due time, or now
    if that passed while it was held."""
    _refence(step, state=StepState.SCHEDULED, due_at=max(step.due_at, now), queued_at=None)


# --- Jobs ---------------------------------------------------------------------------------


@retrying
def job_pause(*, job: Job, reason: str = "") -> Job:
    """Pause a job that has not ended: its pending step is held (no timer on any engine)
    until ``job_resume``; an attempt already running finishes. ``reason`` is kept with
    the pause (shown in the admin and the API). A paused job stays as it is."""
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    errors = Errors()
    reason = _check(errors, "job", job.status, "paused", reason)
    errors.raise_if_any()
    if job.status == PlanStatus.PAUSED:
        return job
    for step in (
        Step.objects.select_for_update(no_key=True)
        .filter(job=job, state__in=PENDING_STATES)
        .order_by("pk")  # the lock order: several steps in ascending id
    ):
        _refence(step, state=StepState.PAUSED, queued_at=None)  # disarmed after the commit
    _mark_paused(job, reason)
    return job


def _mark_paused(owner: Job | Classroom, reason: str) -> None:
    """Save the job or classroom as paused, now, for ``reason`` (its steps already held)."""
    owner.status = PlanStatus.PAUSED
    owner.paused_at = timezone.now()
    owner.pause_reason = reason
    owner.save(update_fields=["status", "paused_at", "pause_reason", "updated_at"])


@retrying
def job_resume(*, job: Job) -> Job:
    """Resume a paused job: what it held is armed again, re-planned by its missed policy
    (see the module's docstring); its count of failures in a row starts again. A job
    that is not paused stays as it is."""
    job = Job.objects.select_for_update(no_key=True).get(pk=job.pk)
    errors = Errors()
    _check(errors, "job", job.status, "resumed")
    errors.raise_if_any()
    if job.status != PlanStatus.PAUSED:
        return job
    now = timezone.now()
    held = job_held_steps(job)
    running = Step.objects.filter(job=job, state=StepState.RUNNING).exists()
    if job.is_recurring:
        going = _resume_recurring(job, held, running=running, now=now)
    else:
        for step in held:
            _rearm(step, now)
            job.due_at = step.due_at
        going = bool(held) or running
    if running:
        job.status = PlanStatus.RUNNING
    elif going:
        job.status = PlanStatus.SCHEDULED
    else:  # nothing left to run (its rule ended while it was paused)
        job.status = _ended_status(job)
    job.paused_at, job.pause_reason, job.consecutive_failures = None, "", 0
    job.save()
    return job


def _ended_status(job: Job) -> str:
    """How a job that has nothing left ended: as its latest step did."""
    latest = Step.objects.filter(job=job).order_by("-sequence", "-poll_number").first()
    if latest is not None and latest.state == StepState.FAILED:
        return PlanStatus.FAILED
    return PlanStatus.SUCCEEDED


def _resume_recurring(job: Job, held: list[Step], *, running: bool, now: dt.datetime) -> bool:
    """Re-plan a paused recurring job (its held steps locked); whether anything is going."""
    fresh = [s for s in held if s.poll_number == 0 and s.attempts == 0]
    begun = [s for s in held if s not in fresh]
    for going in begun:  # a retry or a next check of an occurrence under way goes on
        _rearm(going, now)
    rule = rule_for(job)
    assert rule is not None
    step: Step | None = None
    if fresh:
        *extra, step = sorted(fresh, key=lambda s: s.sequence)
        for other in extra:  # (one is held at most; any other is passed over)
            _refence(other, state=StepState.CANCELLED)
        nxt: dt.datetime | None = step.due_at
    elif begun or running:
        return True  # the occurrence under way plans the next one when it is over
    else:
        last = (
            Step.objects.filter(job=job, poll_number=0)
            .order_by("-sequence")
            .values_list("due_at", flat=True)
            .first()
        )
        after = last if last is not None else rule.starts_at - dt.timedelta(microseconds=1)
        nxt = recurrence.next_after(rule, after, runs_so_far=job.run_count)
    if nxt is not None and nxt <= now and job.missed_policy == MissedPolicy.SKIP:
        nxt = recurrence.next_after(rule, now, runs_so_far=job.run_count)
    if step is not None and nxt != step.due_at:
        _refence(step, state=StepState.CANCELLED)  # passed over (missed runs: skip)
        step = None
    if nxt is None:
        return bool(begun)  # the rule has ended
    if step is not None:
        # At its own time, even a past one: released at once, and the worker applies the
        # missed policy as for any job that is behind (run once, or each in turn).
        _refence(step, state=StepState.SCHEDULED, queued_at=None)
    else:
        job_plan_step(job, nxt, sequence=job.last_sequence + 1)
    job.due_at = nxt
    return True


# --- Classrooms -----------------------------------------------------------------------------


@retrying
def classroom_pause(*, classroom: Classroom, reason: str = "") -> Classroom:
    """Pause a classroom that has not ended: its steps not yet started (the start, the
    pings, the stop) are held until ``classroom_resume``; a step running finishes (a
    recording that started keeps recording). A paused classroom stays as it is."""
    classroom = Classroom.objects.select_for_update(no_key=True).get(pk=classroom.pk)
    errors = Errors()
    reason = _check(errors, "classroom", classroom.status, "paused", reason)
    errors.raise_if_any()
    if classroom.status == PlanStatus.PAUSED:
        return classroom
    steps = list(
        Step.objects.select_for_update(no_key=True).filter(classroom=classroom).order_by("pk")
    )
    pending = [s.pk for s in steps if s.state in PENDING_STATES]
    Step.objects.filter(pk__in=pending).update(
        state=StepState.PAUSED, version=F("version") + 1, **UNHELD
    )
    steps_sync_on_commit(pending)  # update() sends no post_save: their timers are disarmed
    _mark_paused(classroom, reason)
    return classroom


@retrying
def classroom_resume(*, classroom: Classroom) -> Classroom:
    """Resume a paused classroom: held steps are armed again, re-planned (see the module's
    docstring). A classroom that is not paused stays as it is."""
    classroom = Classroom.objects.select_for_update(no_key=True).get(pk=classroom.pk)
    errors = Errors()
    _check(errors, "classroom", classroom.status, "resumed")
    errors.raise_if_any()
    if classroom.status != PlanStatus.PAUSED:
        return classroom
    now = timezone.now()
    steps = list(
        Step.objects.select_for_update(no_key=True).filter(classroom=classroom).order_by("pk")
    )
    live = classroom.end > now
    started = any(s.action == START and s.state in RECORDING_STARTED for s in steps)
    plan = _Plan({}, [], [])
    held = [s for s in steps if s.state == StepState.PAUSED]
    starting = live and any(s.action == START for s in held)
    for step in held:
        if step.action == PING:
            keep = live and step.due_at > now  # a ping is never sent late
        elif step.action == START:
            keep = live  # a late start still records what is left of the class
        else:  # the stop: a recording that started, or starts now, is stopped
            keep = started or starting
        if keep:
            plan.moved[step.pk] = max(step.due_at, now)
        else:
            plan.cancelled.append(step.pk)
    _plan_write(plan)
    running = any(s.state == StepState.RUNNING for s in steps)
    if started:
        classroom.status = PlanStatus.RUNNING
    elif plan.moved or running:
        classroom.status = PlanStatus.SCHEDULED
    else:  # the class ended while paused, before its recording started
        classroom.status = PlanStatus.CANCELLED
    classroom.paused_at, classroom.pause_reason = None, ""
    classroom.save(update_fields=["status", "paused_at", "pause_reason", "updated_at"])
    return classroom


# --- Workflows ------------------------------------------------------------------------------


def _rule_of(workflow: Workflow, verb: str) -> Job:
    job = workflow.schedule
    if job is None:
        raise ValidationError(
            {"schedule": f"the workflow has no rule to {verb}: set one first (schedule_workflow)"}
        )
    return job


def _as_rule_errors(exc: ValidationError, job: Job) -> ValidationError:
    """A refusal about the rule's job, named as the workflow's ``schedule``."""
    messages = [
        f"its rule (job {job.pk}): {message}"
        for field, texts in exc.message_dict.items()
        for message in texts
        if field != "reason"
    ]
    errors = {"schedule": messages} if messages else {}
    if "reason" in exc.message_dict:
        errors["reason"] = exc.message_dict["reason"]
    return ValidationError(errors)


@retrying
def workflow_pause(*, workflow: Workflow, reason: str = "") -> Workflow:
    """Pause a workflow's rule (``job_pause`` of the job that starts it): no execution
    starts until ``workflow_resume``; executions already running go on."""
    workflow = Workflow.objects.select_for_update(no_key=True).get(pk=workflow.pk)
    job = _rule_of(workflow, "pause")
    try:
        job_pause(job=job, reason=reason)
    except ValidationError as exc:
        raise _as_rule_errors(exc, job) from exc
    return workflow


@retrying
def workflow_resume(*, workflow: Workflow) -> Workflow:
    """Resume a workflow's paused rule (``job_resume``): its next start is planned by the
    rule's missed policy."""
    workflow = Workflow.objects.select_for_update(no_key=True).get(pk=workflow.pk)
    job = _rule_of(workflow, "resume")
    try:
        job_resume(job=job)
    except ValidationError as exc:
        raise _as_rule_errors(exc, job) from exc
    return workflow
