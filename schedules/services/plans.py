"""What a job does after one of its steps: plan its next occurrence, or check again.

A recurring job has one pending occurrence at a time, so a job every minute holds
one timer, not one per minute. Its next occurrence is planned when the current
one is taken (overlap policy ``allow``: the next can start while this one runs)
or when the current one is over, its checks and retries included (``skip``: an
occurrence that falls due meanwhile is passed over).

An occurrence is *missed* when a later one is already due by the time it is
taken: the scheduler was down, or the job is far behind. The job's missed
policy decides: ``run_once`` runs it once for all of them, ``run_all`` runs each
in turn, ``skip`` runs none and goes on with the first occurrence after now. A
run that is merely late (the next occurrence is not due yet) is not missed.

A polling job's action may report "not done yet" (``NotDone``): the job checks
again after ``poll_interval`` until the action reports done, it has made
``poll_max_checks`` checks, or ``poll_timeout`` seconds have passed since the
first check's due time (a last check runs at that deadline).

These functions run inside the worker's transactions (``execution``), which lock
the job's row before the step's (the lock order, docs/architecture.md), so a
step's outcome and the step it plans commit together or not at all; the new
step's timer exists only once that commit is done (an engine whose timer is the
row, local, is armed by the commit itself; the others after it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .. import recurrence
from ..engines import engine_name_for_precision, get_engine
from ..models import (
    FINAL_STATES,
    PENDING_STATES,
    ArmState,
    Job,
    MissedPolicy,
    OverlapPolicy,
    PlanStatus,
    Run,
    RunStatus,
    ScheduleType,
    Step,
    StepState,
)
from ..selectors import rule_for
from .rows import JobPlan, job_plan_save
from .sync import steps_sync_on_commit, timer_for

#: Missed occurrences counted one by one, at most (notes say "at least" beyond).
MISSED_COUNT_CAP = 1000


class PlannedJob(Protocol):
    """What planning a step reads of its job: a ``Job``, or the worker's ``JobPlan``."""

    pk: Any
    action: str
    precision: str
    max_attempts: int
    schedule_type: str
    last_sequence: int


def written_armed(engine_name: str, due_at: dt.datetime, now: dt.datetime) -> bool:
    """A new step is written armed when its engine's timer is the row itself (local) and
    it falls within the arm horizon: its transaction's commit arms it."""
    horizon = now + dt.timedelta(seconds=settings.SCHEDULES_ARM_HORIZON)
    return get_engine(engine_name).row_is_timer and due_at <= horizon


def job_plan_step(
    job: PlannedJob,
    due_at: dt.datetime,
    *,
    sequence: int,
    poll_number: int = 0,
    held: bool = False,
) -> Step:
    """A new pending step of ``job``; the caller saves ``job`` (its ``last_sequence``).

    With an engine whose timer is the row itself (local), the step is armed by this
    transaction's commit, so it is written armed (if within the horizon) and the
    dispatchers are woken (PostgreSQL delivers the NOTIFY at the commit); with any
    other engine its post_save syncs it after the commit. A ``held`` step (its job is
    paused) is written paused: no engine holds a timer for it until the job resumes.
    """
    step = Step(
        job_id=job.pk,
        action=job.action,
        sequence=sequence,
        poll_number=poll_number,
        due_at=due_at,
        precision=job.precision,
        max_attempts=job.max_attempts,
        recurring=job.schedule_type != ScheduleType.ONCE,
        state=StepState.PAUSED if held else StepState.SCHEDULED,
    )
    job.last_sequence = max(job.last_sequence, sequence)
    return step_plan(step)


def step_plan(step: Step) -> Step:
    """Save a new pending step on the engine its precision chooses (see job_plan_step)."""
    name = step.engine = engine_name_for_precision(step.precision)
    engine = get_engine(name)
    if not engine.row_is_timer:
        step.save()
        return step
    if step.state == StepState.SCHEDULED and written_armed(name, step.due_at, timezone.now()):
        step.arm_state, step.armed_version, step.armed_engine = ArmState.ARMED, 1, name
        step.armed_at = timezone.now()
    (step,) = Step.objects.bulk_create([step])  # no post_save: nothing to sync after
    if step.arm_state == ArmState.ARMED:
        engine.arm(timer_for(step))
    return step


def job_pending_step(job: Job) -> Step | None:
    """The job's pending step, locked: its latest step if that one has not run yet.

    Every pending step of the job is locked, in ascending id (the lock order), so that
    the caller may change any of them afterwards (a job with overlap ``allow`` can have
    two)."""
    pending = list(
        Step.objects.select_for_update(no_key=True)
        .filter(job=job, state__in=PENDING_STATES)
        .order_by("pk")
    )
    return max(pending, key=lambda step: (step.sequence, step.poll_number), default=None)


def _missed_note(count: int) -> str:
    more = "at least " if count >= MISSED_COUNT_CAP else ""
    return f"{more}{count} later occurrence{'s' if count != 1 else ''} already due when taken"


def _occurrence_start(job_id: int, sequence: int) -> tuple[dt.datetime, dt.datetime]:
    """An occurrence's due time and when it was first taken: its first check's first run."""
    first = Step.objects.filter(job_id=job_id, sequence=sequence, poll_number=0).only("due_at")
    step = first.get()
    taken: dt.datetime | None = (
        Run.objects.filter(step=step)
        .exclude(status=RunStatus.SKIPPED)
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    return step.due_at, taken or step.due_at


def _plan_successor(
    job: JobPlan, *, sequence: int, due_at: dt.datetime, taken_at: dt.datetime
) -> bool:
    """Plan the occurrence after ``sequence`` unless a later one is planned already (a
    retry, a takeover, a rule changed meanwhile). Whether one is planned now."""
    if job.last_sequence > sequence:
        return True
    rule = rule_for(job)
    assert rule is not None
    nxt = recurrence.successor(
        rule,
        due_at=due_at,
        taken_at=taken_at,
        now=max(taken_at, timezone.now()),
        run_all_missed=job.missed_policy == MissedPolicy.RUN_ALL,
        runs_so_far=job.run_count,
    )
    if nxt is None:
        return False
    if job.status == PlanStatus.PAUSED:
        return True  # there is a next occurrence, but nothing is planned: resume plans it
    job.due_at = nxt
    job_plan_step(job, nxt, sequence=job.last_sequence + 1)
    return True


def _later_steps_status(job: JobPlan, sequence: int) -> str | None:
    """running or scheduled if a step of a later occurrence is (overlap allow), else None."""
    states = set(
        Step.objects.filter(job_id=job.pk, sequence__gt=sequence)
        .exclude(state__in=FINAL_STATES)
        .values_list("state", flat=True)
    )
    if StepState.RUNNING in states:
        return PlanStatus.RUNNING
    return PlanStatus.SCHEDULED if states else None


@dataclass(frozen=True)
class Taken:
    """What the job says of an occurrence the worker has just claimed."""

    skip: bool = False
    note: str = ""


def occurrence_taken(
    *,
    job: JobPlan,
    step_id: int,
    sequence: int,
    due_at: dt.datetime,
    attempt: int,
    now: dt.datetime,
) -> Taken:
    """An occurrence was claimed (attempt ``attempt``): apply the missed policy, count
    the run, and with overlap ``allow`` plan the next occurrence now. A skipped
    occurrence's step is cancelled here. ``job`` is the plan, locked by the caller before
    the step (the lock order)."""
    if attempt > 1:  # a retry or a takeover of an occurrence already counted
        job_plan_save(job, PlanStatus.RUNNING)
        return Taken()
    rule = rule_for(job)
    assert rule is not None
    behind = recurrence.count_due(rule, due_at, now, cap=MISSED_COUNT_CAP)
    if behind and job.missed_policy == MissedPolicy.SKIP:
        Step.objects.filter(pk=step_id).update(
            state=StepState.CANCELLED, holder="", lease_until=None
        )
        planned = _plan_successor(job, sequence=sequence, due_at=due_at, taken_at=now)
        job_plan_save(job, PlanStatus.SCHEDULED if planned else PlanStatus.SUCCEEDED)
        return Taken(skip=True, note=f"missed: {_missed_note(behind)}; skipped (missed runs: skip)")
    note = ""
    if behind:
        policy = (
            "ran once for all of them (missed runs: run once)"
            if job.missed_policy == MissedPolicy.RUN_ONCE
            else "each runs in turn (missed runs: run all)"
        )
        note = f"behind: {_missed_note(behind)}; {policy}"
    job.run_count += 1
    if job.overlap_policy == OverlapPolicy.ALLOW:
        _plan_successor(job, sequence=sequence, due_at=due_at, taken_at=now)
    job_plan_save(job, PlanStatus.RUNNING)
    return Taken(note=note)


def _count_outcome(job: JobPlan, state: str, error: str) -> None:
    """An occurrence of a recurring job is over: count it, and pause the job once it has
    failed ``pause_after_failures`` times in a row (a pending occurrence, planned early
    by overlap ``allow``, is held; nothing more is planned)."""
    if state != StepState.FAILED:
        job.consecutive_failures = 0
        return
    job.consecutive_failures += 1
    limit = job.pause_after_failures
    active = job.status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING)
    if limit is None or job.consecutive_failures < limit or not active:
        return
    lines = error.strip().splitlines()
    job.pausing = (
        f"paused after {job.consecutive_failures} consecutive failures: "
        f"{lines[0] if lines else 'no error text'}"
    )
    job.status = PlanStatus.PAUSED
    held = list(
        Step.objects.select_for_update(no_key=True)
        .filter(job_id=job.pk, state__in=PENDING_STATES)
        .order_by("pk")  # the lock order: steps in ascending id
        .values_list("pk", flat=True)
    )
    if held:
        Step.objects.filter(pk__in=held).update(
            state=StepState.PAUSED,
            version=F("version") + 1,
            queued_at=None,
            holder="",
            lease_until=None,
        )
        steps_sync_on_commit(held)  # their timers are disarmed after the commit


def poll_next_due(
    *, job_id: int, sequence: int, poll_number: int, due_at: dt.datetime, now: dt.datetime
) -> tuple[dt.datetime | None, str]:
    """When to check again after a "not done" check, or (None, why not)."""
    job = Job.objects.only("poll_interval", "poll_max_checks", "poll_timeout").get(pk=job_id)
    if job.poll_interval is None:
        return None, "the action is not done, and the job does not poll (no poll_interval)"
    checks = poll_number + 1
    if job.poll_max_checks is not None and checks >= job.poll_max_checks:
        return None, f"not done after {checks} check{'s' if checks != 1 else ''} (poll_max_checks)"
    nxt = now + dt.timedelta(seconds=job.poll_interval)
    if job.poll_timeout is not None:
        first = _occurrence_start(job_id, sequence)[0] if poll_number else due_at
        deadline = first + dt.timedelta(seconds=job.poll_timeout)
        if now >= deadline:
            return None, f"not done by the deadline, {job.poll_timeout} s after the first check"
        nxt = min(nxt, deadline)
    return nxt, ""


def step_settled(
    *,
    job: JobPlan,
    sequence: int,
    poll_number: int,
    due_at: dt.datetime,
    recurring: bool,
    state: str,
    taken_at: dt.datetime,
    first_attempt: bool,
    check_again_at: dt.datetime | None,
    error: str = "",
) -> None:
    """A step of a recurring or polling job settled in ``state`` (``scheduled``: it
    retries at ``due_at``; ``paused``: that retry is held, the job is paused): plan
    what follows (the next check, or with overlap ``skip`` the next occurrence once
    this one is over) and save the job's status. ``check_again_at`` is set when the
    action was not done yet; ``taken_at`` is when this attempt was claimed (the
    occurrence's own start is looked up when this is not its first check's first
    attempt). ``job`` is the plan, locked by the caller before the step (the lock
    order). An occurrence that failed (``error``: why) counts towards the job's
    ``pause_after_failures``; one that succeeded starts the count again.

    While the job is paused nothing is armed: a next check or a retry is written held
    (paused), and the next occurrence is not planned at all (``job_resume`` plans it,
    by the missed policy)."""
    job_id = job.pk
    paused = job.status == PlanStatus.PAUSED
    if check_again_at is not None:
        job.due_at = check_again_at
        job_plan_step(
            job, check_again_at, sequence=sequence, poll_number=poll_number + 1, held=paused
        )
        job_plan_save(job, PlanStatus.SCHEDULED)
        return
    if state in (StepState.SCHEDULED, StepState.PAUSED):  # a retry of this step (held)
        job.due_at = due_at
        job_plan_save(job, PlanStatus.SCHEDULED)
        return
    if recurring:
        _count_outcome(job, state, error)
    planned = False
    if recurring and job.overlap_policy == OverlapPolicy.SKIP:
        if poll_number or not first_attempt:
            due_at, taken_at = _occurrence_start(job_id, sequence)
        planned = _plan_successor(job, sequence=sequence, due_at=due_at, taken_at=taken_at)
    later = None
    if recurring and job.overlap_policy == OverlapPolicy.ALLOW:
        later = _later_steps_status(job, sequence)  # planned when this one was taken
    if planned or later:
        job_plan_save(job, later or PlanStatus.SCHEDULED)
    else:  # over: the rule ended (or a one-off check finished)
        job_plan_save(job, PlanStatus.FAILED if state == StepState.FAILED else PlanStatus.SUCCEEDED)
