"""The worker's side: fence, claim, run the action, record the run (invariants 3 and 4)."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError as PydanticValidationError

from workers.actions import ActionContext, ActionError, TransientError, get_action
from workers.actions.base import UnknownAction

from ..models import (
    PENDING_STATES,
    Classroom,
    Job,
    PlanStatus,
    Run,
    RunStatus,
    Step,
    StepState,
)
from .sync import steps_sync_on_commit

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str  # RunStatus value
    result: Any = None
    error: str = ""
    note: str = ""


def retry_delay(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    base: float = settings.SCHEDULES_RETRY_BASE
    ceiling = min(float(settings.SCHEDULES_RETRY_MAX), base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _skip_reason(step: Step, version: int, now: dt.datetime) -> str:
    if version != step.version:
        return f"stale message: version {version}, the step is at version {step.version}"
    if step.state == StepState.CANCELLED:
        return "the step was cancelled"
    if step.state in (StepState.SUCCEEDED, StepState.FAILED):
        return f"duplicate delivery: the step already {step.state}"
    if step.state == StepState.RUNNING and step.lease_until and step.lease_until > now:
        return "duplicate delivery: the step is running under a live lease"
    return ""


def _record_skip(step: Step, version: int, reason: str, worker: str) -> Run:
    now = timezone.now()
    logger.info("skipping step %s v%s on %s: %s", step.pk, version, step.engine, reason)
    return Run.objects.create(
        step=step,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        action=step.action,
        engine=step.engine,
        version=version,
        attempt=step.attempts,
        status=RunStatus.SKIPPED,
        due_at=step.due_at,
        started_at=now,
        finished_at=now,
        note=reason[:300],
        worker=worker,
    )


def _redefer(step: Step, version: int, worker: str, early: float) -> Run | None:
    """A message that came too early: arm the step again for its due time."""
    with transaction.atomic():
        moved = Step.objects.filter(pk=step.pk, version=version, state__in=PENDING_STATES).update(
            state=StepState.SCHEDULED, queued_at=None, version=F("version") + 1
        )
        if not moved:
            return None
        steps_sync_on_commit([step.pk])
        return _record_skip(step, version, f"arrived {early:.1f} s early; re-armed", worker)


def _claim(
    step: Step, version: int, now: dt.datetime, worker: str
) -> tuple[Run, dt.datetime] | None:
    """One conditional UPDATE takes the lease; only one delivery can win it."""
    observed = Step.objects.filter(pk=step.pk, version=version, state=step.state)
    if step.state == StepState.RUNNING:
        observed = observed.filter(lease_until=step.lease_until)
    lease_until = now + dt.timedelta(seconds=settings.SCHEDULES_LEASE_SECONDS)
    takeover = step.state == StepState.RUNNING
    with transaction.atomic():
        if not observed.update(
            state=StepState.RUNNING,
            lease_until=lease_until,
            attempts=F("attempts") + 1,
            queued_at=None,
        ):
            return None
        note = ""
        if takeover:
            lost = Run.objects.filter(step=step, status=RunStatus.RUNNING)
            lost_attempts = list(lost.values_list("attempt", flat=True))
            lost.update(
                status=RunStatus.ABANDONED,
                finished_at=now,
                note="worker lost before the attempt finished; taken over",
            )
            note = (
                f"took over after attempt {', '.join(map(str, lost_attempts)) or '?'} was lost "
                "mid-run: it may already have had its effect"
            )
        if step.job_id:
            Job.objects.filter(pk=step.job_id).exclude(status=PlanStatus.CANCELLED).update(
                status=PlanStatus.RUNNING
            )
        run = Run.objects.create(
            step=step,
            job_id=step.job_id,
            classroom_id=step.classroom_id,
            action=step.action,
            engine=step.engine,
            version=version,
            attempt=step.attempts + 1,
            status=RunStatus.RUNNING,
            due_at=step.due_at,
            started_at=now,
            worker=worker,
            uncertain=takeover and _has_side_effects(step.action),
            note=note,
        )
    return run, lease_until


def _has_side_effects(action: str) -> bool:
    try:
        return get_action(action).has_side_effects
    except UnknownAction:
        return True


def _payload_for(step: Step) -> dict[str, Any]:
    """The action's arguments, read now from the database (the source of truth)."""
    if step.job_id:
        payload: dict[str, Any] = Job.objects.values_list("payload", flat=True).get(id=step.job_id)
        return payload
    assert step.classroom_id is not None
    classroom = Classroom.objects.only("recording_service_ref").get(id=step.classroom_id)
    return {"recording_service_ref": classroom.recording_service_ref, "classroom_id": classroom.pk}


def _run_action(step: Step, run: Run) -> tuple[Outcome, dt.datetime]:
    try:
        action = get_action(step.action)
        payload = action.payload_model.model_validate(_payload_for(step))
    except (UnknownAction, PydanticValidationError) as exc:
        return Outcome(RunStatus.FAILED, error=f"cannot run: {exc}"), timezone.now()
    ctx = ActionContext(
        step_id=step.pk,
        version=run.version,
        attempt=run.attempt,
        due_at=step.due_at,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        uncertain=run.uncertain,
    )
    started = timezone.now()
    try:
        result = action.func(ctx, payload)
    except TransientError as exc:
        return Outcome(RunStatus.RETRYING, error=f"{type(exc).__name__}: {exc}"), started
    except ActionError as exc:
        return Outcome(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}"), started
    except Exception as exc:
        logger.exception("step %s v%s: action %s raised", step.pk, run.version, step.action)
        tb = traceback.format_exc(limit=5)
        return Outcome(RunStatus.RETRYING, error=f"{type(exc).__name__}: {exc}\n{tb}"), started
    return Outcome(RunStatus.SUCCEEDED, result=result), started


def _refresh_owner(step: Step, step_state: str) -> None:
    if step.job_id:
        job_status = {
            StepState.SUCCEEDED.value: PlanStatus.SUCCEEDED,
            StepState.FAILED.value: PlanStatus.FAILED,
            StepState.SCHEDULED.value: PlanStatus.SCHEDULED,
        }[step_state]
        Job.objects.filter(pk=step.job_id).exclude(status=PlanStatus.CANCELLED).update(
            status=job_status
        )
        return
    assert step.classroom_id is not None
    classroom = Classroom.objects.filter(id=step.classroom_id).exclude(status=PlanStatus.CANCELLED)
    if step.action == "start_recording" and step_state == StepState.SUCCEEDED:
        classroom.filter(status=PlanStatus.SCHEDULED).update(status=PlanStatus.RUNNING)
    elif step.action == "stop_recording" and step_state == StepState.SUCCEEDED:
        classroom.update(status=PlanStatus.SUCCEEDED)
    elif step.action in ("start_recording", "stop_recording") and step_state == StepState.FAILED:
        classroom.update(status=PlanStatus.FAILED)


def _finish(
    step: Step, run: Run, outcome: Outcome, started: dt.datetime, lease_until: dt.datetime
) -> Run:
    now = timezone.now()
    # Fenced by version and by this attempt's own lease: an attempt that lost its
    # lease (taken over) cannot overwrite the step.
    live = Step.objects.filter(
        pk=step.pk,
        version=run.version,
        state=StepState.RUNNING,
        lease_until=lease_until,
    )
    with transaction.atomic():
        if outcome.status == RunStatus.RETRYING and run.attempt >= step.max_attempts:
            outcome.status = RunStatus.FAILED
            outcome.note = f"gave up after {run.attempt} attempts"
        if outcome.status == RunStatus.SUCCEEDED:
            new_state = StepState.SUCCEEDED
            changed = live.update(state=new_state, lease_until=None)
        elif outcome.status == RunStatus.RETRYING:
            new_state = StepState.SCHEDULED
            delay = retry_delay(run.attempt)
            outcome.note = f"attempt {run.attempt} of {step.max_attempts}; retry in {delay:.1f} s"
            changed = live.update(
                state=new_state,
                lease_until=None,
                version=F("version") + 1,
                due_at=now + dt.timedelta(seconds=delay),
            )
            if changed:
                steps_sync_on_commit([step.pk])
        else:
            new_state = StepState.FAILED
            changed = live.update(state=new_state, lease_until=None)
        if not changed:
            current = Step.objects.filter(pk=step.pk).values_list("version", "state").first()
            lease_lost = (
                current is not None
                and current[0] == run.version
                and (current[1] != StepState.CANCELLED)
            )
            why = (
                "its lease expired and another attempt took over"
                if lease_lost
                else "the step was cancelled or rescheduled while it ran"
            )
            outcome.note = f"{outcome.note}; {why}".lstrip("; ")
            if outcome.status == RunStatus.RETRYING:
                outcome.status = RunStatus.FAILED
        else:
            _refresh_owner(step, new_state)
        run.status = outcome.status
        run.result = outcome.result
        run.error = outcome.error[:10000]
        run.note = (
            f"{run.note}; {outcome.note}" if run.note and outcome.note else run.note or outcome.note
        )[:300]
        run.started_at = started
        run.lateness = started - step.due_at
        run.finished_at = now
        run.save(
            update_fields=[
                "status",
                "result",
                "error",
                "note",
                "started_at",
                "lateness",
                "finished_at",
            ]
        )
    log = logger.info if outcome.status == RunStatus.SUCCEEDED else logger.warning
    log(
        "step %s v%s on %s: %s attempt %s (late %.1f ms) %s",
        step.pk,
        run.version,
        step.engine,
        run.status,
        run.attempt,
        run.lateness.total_seconds() * 1000,
        outcome.error.splitlines()[0] if outcome.error else "",
    )
    return run


def step_execute(*, step_id: int, version: int, worker: str = "") -> Run | None:
    """Run one delivery of ``(step_id, version)``. Returns the run recorded, if any.

    A stale, cancelled or duplicate delivery is recorded as a skipped run and
    not executed; a delivery that arrives before the due time is held (up to
    SCHEDULES_EARLY_HOLD_MAX) or re-armed.
    """
    step = Step.objects.filter(pk=step_id).first()
    if step is None:
        logger.info("skipping step %s v%s: the step no longer exists", step_id, version)
        return None
    now = timezone.now()
    reason = _skip_reason(step, version, now)
    if reason:
        return _record_skip(step, version, reason, worker)
    early = (step.due_at - now).total_seconds()
    if early > 0:
        if early > settings.SCHEDULES_EARLY_HOLD_MAX:
            return _redefer(step, version, worker, early)
        time.sleep(early)
        now = timezone.now()
    claim = _claim(step, version, now, worker)
    if claim is None:
        # The step changed since it was read (during an early hold, say): say why.
        step.refresh_from_db()
        reason = _skip_reason(step, version, timezone.now())
        return _record_skip(step, version, reason or "another delivery claimed it first", worker)
    run, lease_until = claim
    step.attempts = run.attempt
    outcome, started = _run_action(step, run)
    return _finish(step, run, outcome, started, lease_until)
