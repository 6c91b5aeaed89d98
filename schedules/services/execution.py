"""The worker's side: fence, claim, run the action, record the run (invariants 3, 4, 8, 9).

Every delivered step passes through here, so the common path (read, claim, run,
finish) is a handful of short SQL statements written out once below instead of
ORM calls: building an ORM query costs more than running it, and this path must
sustain hundreds of steps per second on a small machine (docs/benchmarks.md).
The statements are plain SQL that SQLite and PostgreSQL both run, take their
table names from the models, and adapt values through the models' own fields.
Rare paths (skips, re-arms, takeovers) use the ORM.

Locks follow the one lock order (docs/architecture.md): a transaction that touches
a step's owner (its job or classroom) locks the owner first, then the step, then
runs, like the services that cancel or change them. A database error is retried
in place (``_retry_db``): before the action, the claim is tried again; after it,
only the record is, never the action.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from pydantic import ValidationError as PydanticValidationError

from workers.actions import ActionContext, ActionError, NotDone, TransientError, get_action
from workers.actions.base import UnknownAction

from .. import events, metrics
from ..logcontext import step_log_context, step_log_learned
from ..models import (
    PENDING_STATES,
    Classroom,
    Execution,
    Job,
    PlanStatus,
    Run,
    RunStatus,
    Step,
    StepState,
)
from . import executions, plans
from .leases import LeaseKeeper, locked_in_order, placeholders, process_name
from .rows import (
    JobPlan,
    from_db_datetime,
    job_plan_lock,
    json_from_db,
    kept_statuses,
    to_db,
)
from .sync import steps_sync_on_commit

logger = logging.getLogger(__name__)

STEP_TABLE = Step._meta.db_table
JOB_TABLE = Job._meta.db_table
RUN_TABLE = Run._meta.db_table
CLASSROOM_TABLE = Classroom._meta.db_table
STEP_COLUMNS = (
    "id, job_id, classroom_id, action, due_at, version, state, lease_until, attempts, "
    "max_attempts, engine, sequence, poll_number, recurring, holder, execution_id, state_name, "
    "armed_at"
)
#: Classroom actions whose outcome changes the classroom's status.
RECORDING_ACTIONS = ("start_recording", "stop_recording")

T = TypeVar("T")
RUN_COLUMNS = (
    "step_id, job_id, classroom_id, action, engine, version, attempt, status, due_at, "
    "started_at, error, uncertain, note, worker, execution_id"
)


@dataclass
class StepRow:
    """What the worker reads of a step: ids, time, fence and attempts (never the payload)."""

    pk: int
    job_id: int | None
    classroom_id: int | None
    action: str
    due_at: dt.datetime
    version: int
    state: str
    lease_until: dt.datetime | None
    attempts: int
    max_attempts: int
    engine: str
    sequence: int = 0
    poll_number: int = 0
    recurring: bool = False
    holder: str = ""
    execution_id: int | None = None
    state_name: str = ""
    armed_at: dt.datetime | None = None

    @property
    def engine_due_at(self) -> dt.datetime:
        """From when the engine owed the release: the due time, or the moment it took
        the timer if that was later (a step saved or re-armed after its due time)."""
        if self.armed_at is not None and self.armed_at > self.due_at:
            return self.armed_at
        return self.due_at


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


def _read_step(step_id: int) -> StepRow | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {STEP_COLUMNS} FROM {STEP_TABLE} WHERE id = %s", [step_id])
        row = cursor.fetchone()
    return None if row is None else _step_row(row)


def _read_steps(ids: Sequence[int]) -> dict[int, StepRow]:
    """Several steps by id, in one statement."""
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {STEP_COLUMNS} FROM {STEP_TABLE} WHERE id IN ({placeholders(len(ids))})", ids
        )
        return {row[0]: _step_row(row) for row in cursor.fetchall()}


def _step_row(row: Sequence[Any]) -> StepRow:
    due_at = from_db_datetime(row[4])
    assert due_at is not None
    return StepRow(
        pk=row[0],
        job_id=row[1],
        classroom_id=row[2],
        action=row[3],
        due_at=due_at,
        version=row[5],
        state=row[6],
        lease_until=from_db_datetime(row[7]),
        attempts=row[8],
        max_attempts=row[9],
        engine=row[10],
        sequence=row[11],
        poll_number=row[12],
        recurring=bool(row[13]),
        holder=row[14],
        execution_id=row[15],
        state_name=row[16],
        armed_at=from_db_datetime(row[17]),
    )


def _set_job_status(job_id: int, status: str) -> None:
    """A cancelled job stays cancelled; a paused one paused, unless ``status`` ends it."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {JOB_TABLE} SET status = %s WHERE id = %s AND status NOT IN (%s, %s)",
            [status, job_id, *kept_statuses(status)],
        )


# --- Skips and re-arms (rare: ORM) ------------------------------------------------------------


def _skip_reason(step: StepRow, version: int, now: dt.datetime) -> str:
    if version != step.version:
        return f"stale message: version {version}, the step is at version {step.version}"
    if step.state == StepState.CANCELLED:
        return "the step was cancelled"
    if step.state == StepState.PAUSED:
        return "the step is held: its job or classroom is paused"
    if step.state in (StepState.SUCCEEDED, StepState.FAILED):
        return f"duplicate delivery: the step already {step.state}"
    if step.state == StepState.RUNNING and step.lease_until and step.lease_until > now:
        return "duplicate delivery: the step is running under a live lease"
    return ""


def _record_skip(step: StepRow, version: int, reason: str, worker: str) -> Run:
    now = timezone.now()
    logger.info("skipping step %s v%s on %s: %s", step.pk, version, step.engine, reason)
    return Run.objects.create(
        step_id=step.pk,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        execution_id=step.execution_id,
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


def _redefer(step: StepRow, version: int, worker: str, early: float) -> Run | None:
    """A message that came too early: arm the step again for its due time."""
    with transaction.atomic():
        moved = Step.objects.filter(pk=step.pk, version=version, state__in=PENDING_STATES).update(
            state=StepState.SCHEDULED,
            queued_at=None,
            holder="",
            lease_until=None,
            version=F("version") + 1,
        )
        if not moved:
            return None
        steps_sync_on_commit([step.pk])
        return _record_skip(step, version, f"arrived {early:.1f} s early; re-armed", worker)


def _abandon_lost_attempts(step: StepRow, now: dt.datetime) -> str:
    """A takeover: the lost attempt's run is closed as abandoned; say it may have acted."""
    lost = Run.objects.filter(step_id=step.pk, status=RunStatus.RUNNING)
    lost_attempts = list(lost.values_list("attempt", flat=True))
    lost.update(
        status=RunStatus.ABANDONED,
        finished_at=now,
        note="worker lost before the attempt finished; taken over",
    )
    return (
        f"took over after attempt {', '.join(map(str, lost_attempts)) or '?'} was lost "
        "mid-run: it may already have had its effect"
    )


# --- The common path ---------------------------------------------------------------------------


def _lock_owner_to_take(step: StepRow) -> JobPlan | None:
    """The claim's first lock, the step's owner (the lock order): a recurring job's
    occurrence locks the job's plan; any other job step marks its job running (the
    UPDATE locks the row); a classroom's status does not change when a step starts."""
    if step.job_id is None:
        return None
    if step.recurring and step.poll_number == 0:
        return job_plan_lock(step.job_id)
    _set_job_status(step.job_id, PlanStatus.RUNNING.value)
    return None


def _take_step(step: StepRow, version: int, now: dt.datetime, worker: str) -> bool:
    """One conditional UPDATE takes the step and its lease; only one delivery can win it.

    A takeover (the step is running under a lapsed lease) is fenced by the lease it
    read, so a holder that renewed meanwhile keeps its step and only one taker wins.
    """
    lease_until = now + dt.timedelta(seconds=settings.SCHEDULES_LEASE_SECONDS)
    sql = (
        f"UPDATE {STEP_TABLE} SET state = %s, holder = %s, lease_until = %s, "
        "attempts = attempts + 1, queued_at = NULL WHERE id = %s AND version = %s AND state = %s"
    )
    params = [
        StepState.RUNNING.value,
        worker,
        to_db(Step, "lease_until", lease_until),
        step.pk,
        version,
        step.state,
    ]
    if step.state == StepState.RUNNING:
        sql += " AND lease_until = %s"
        params.append(to_db(Step, "lease_until", step.lease_until))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


def _claim(step: StepRow, version: int, now: dt.datetime, worker: str) -> Run | None:
    """Take the step for this attempt and open its run, in one transaction (owner first)."""
    takeover = step.state == StepState.RUNNING
    notes: list[str] = []
    uncertain = takeover and _has_side_effects(step.action)
    status = RunStatus.RUNNING
    with transaction.atomic():
        plan = _lock_owner_to_take(step)
        if not _take_step(step, version, now, worker):
            transaction.set_rollback(True)  # the owner's change, if any, goes too
            return None
        if takeover:
            notes.append(_abandon_lost_attempts(step, now))
        if plan is not None:
            taken = plans.occurrence_taken(
                job=plan,
                step_id=step.pk,
                sequence=step.sequence,
                due_at=step.due_at,
                attempt=step.attempts + 1,
                now=now,
            )
            notes.append(taken.note)
            if taken.skip:
                status = RunStatus.SKIPPED
        run = _opened_run(
            step,
            version,
            now,
            worker,
            status=status,
            uncertain=uncertain,
            note="; ".join(n for n in notes if n)[:300],
        )
        run.pk = _insert_run(run)
        if status == RunStatus.SKIPPED:
            run.finished_at = now
            _save_runs([run])
    return run


def _opened_run(
    step: StepRow,
    version: int,
    now: dt.datetime,
    worker: str,
    *,
    status: str = RunStatus.RUNNING,
    uncertain: bool = False,
    note: str = "",
) -> Run:
    """The run of the attempt ``worker`` has just claimed (not saved yet)."""
    return Run(
        step_id=step.pk,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        execution_id=step.execution_id,
        action=step.action,
        engine=step.engine,
        version=version,
        attempt=step.attempts + 1,
        status=status,
        due_at=step.due_at,
        started_at=now,
        worker=worker,
        uncertain=uncertain,
        note=note,
    )


def _claimed_before(step: StepRow, version: int, attempt: int, worker: str) -> Run | None:
    """After a claim whose commit may or may not have happened (the connection broke at
    COMMIT): this attempt's run if the claim did commit, else None."""
    if not (
        step.state == StepState.RUNNING
        and step.version == version
        and step.holder == worker
        and step.attempts == attempt
    ):
        return None
    return Run.objects.filter(step_id=step.pk, attempt=attempt, status=RunStatus.RUNNING).first()


def _run_values(run: Run) -> list[Any]:
    """The run's RUN_COLUMNS, as the database takes them."""
    return [
        run.step_id,
        run.job_id,
        run.classroom_id,
        run.action,
        run.engine,
        run.version,
        run.attempt,
        run.status,
        to_db(Run, "due_at", run.due_at),
        to_db(Run, "started_at", run.started_at),
        run.error,
        run.uncertain,
        run.note,
        run.worker,
        run.execution_id,
    ]


def _insert_run(run: Run) -> int:
    values = _run_values(run)
    sql = f"INSERT INTO {RUN_TABLE} ({RUN_COLUMNS}) VALUES ({placeholders(len(values))})"
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(f"{sql} RETURNING id", values)
            return int(cursor.fetchone()[0])
        cursor.execute(sql, values)
        return int(cursor.lastrowid)


def _has_side_effects(action: str) -> bool:
    try:
        return get_action(action).has_side_effects
    except UnknownAction:
        return True


def _payload_for(step: StepRow) -> dict[str, Any]:
    """The action's arguments, read now from the database (the source of truth): a
    workflow step's own (rendered when its state was entered), or its job's."""
    with connection.cursor() as cursor:
        if step.execution_id:
            cursor.execute(f"SELECT payload FROM {STEP_TABLE} WHERE id = %s", [step.pk])
            (raw,) = cursor.fetchone()
            return json_from_db(raw) if raw is not None else {}
        if step.job_id:
            cursor.execute(f"SELECT payload FROM {JOB_TABLE} WHERE id = %s", [step.job_id])
            (raw,) = cursor.fetchone()
            return json_from_db(raw)
        assert step.classroom_id is not None
        cursor.execute(
            f"SELECT recording_service_ref FROM {Classroom._meta.db_table} WHERE id = %s",
            [step.classroom_id],
        )
        (ref,) = cursor.fetchone()
    return {"recording_service_ref": ref, "classroom_id": step.classroom_id}


def _run_action(
    step: StepRow, run: Run, raw_payload: dict[str, Any] | None = None
) -> tuple[Outcome, dt.datetime]:
    try:
        action = get_action(step.action)
        raw = _payload_for(step) if raw_payload is None else raw_payload
        payload = action.payload_model.model_validate(raw)
    except (UnknownAction, PydanticValidationError) as exc:
        return Outcome(RunStatus.FAILED, error=f"cannot run: {exc}"), timezone.now()
    ctx = ActionContext(
        step_id=step.pk,
        version=run.version,
        attempt=run.attempt,
        due_at=step.due_at,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        execution_id=step.execution_id,
        uncertain=run.uncertain,
    )
    started = timezone.now()
    try:
        result = action.func(ctx, payload)
        if isinstance(result, NotDone):
            return Outcome(RunStatus.NOT_DONE, result=result.result), started
    except TransientError as exc:
        return Outcome(RunStatus.RETRYING, error=f"{type(exc).__name__}: {exc}"), started
    except ActionError as exc:
        return Outcome(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}"), started
    except Exception as exc:
        logger.exception("step %s v%s: action %s raised", step.pk, run.version, step.action)
        tb = traceback.format_exc(limit=5)
        return Outcome(RunStatus.RETRYING, error=f"{type(exc).__name__}: {exc}\n{tb}"), started
    return Outcome(RunStatus.SUCCEEDED, result=result), started


def _check_again_at(step: StepRow, now: dt.datetime) -> tuple[dt.datetime | None, str]:
    """After a "not done" check: when the job checks again, or (None, why it stops)."""
    if step.job_id is None:
        return None, "the action is not done, and only a job can check again"
    return plans.poll_next_due(
        job_id=step.job_id,
        sequence=step.sequence,
        poll_number=step.poll_number,
        due_at=step.due_at,
        now=now,
    )


def _refresh_owner(step: StepRow, step_state: str) -> None:
    if step.job_id:
        job_status = {
            StepState.SUCCEEDED.value: PlanStatus.SUCCEEDED,
            StepState.FAILED.value: PlanStatus.FAILED,
            StepState.SCHEDULED.value: PlanStatus.SCHEDULED,
            StepState.PAUSED.value: PlanStatus.PAUSED,  # a retry held: the job is paused
        }[step_state]
        _set_job_status(step.job_id, job_status.value)
        return
    assert step.classroom_id is not None
    classroom = Classroom.objects.filter(id=step.classroom_id).exclude(status=PlanStatus.CANCELLED)
    if step.action == "start_recording" and step_state == StepState.SUCCEEDED:
        classroom.filter(status=PlanStatus.SCHEDULED).update(status=PlanStatus.RUNNING)
    elif step.action == "stop_recording" and step_state == StepState.SUCCEEDED:
        classroom.update(status=PlanStatus.SUCCEEDED)
    elif step.action in ("start_recording", "stop_recording") and step_state == StepState.FAILED:
        classroom.update(status=PlanStatus.FAILED)


def _settle_step(step: StepRow, run: Run, new_state: str, retry_at: dt.datetime | None) -> bool:
    """Fenced by version and by this attempt's number: an attempt that was taken over
    (the taker's claim counted another attempt) cannot overwrite the step."""
    sets = "state = %s, holder = '', lease_until = NULL"
    params: list[Any] = [new_state]
    if retry_at is not None:
        sets += ", version = version + 1, due_at = %s"
        params.append(to_db(Step, "due_at", retry_at))
    params += [
        step.pk,
        run.version,
        StepState.RUNNING.value,
        run.attempt,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET {sets} "
            "WHERE id = %s AND version = %s AND state = %s AND attempts = %s",
            params,
        )
        return bool(cursor.rowcount == 1)


def _lock_rows(table: str, ids: Sequence[int]) -> None:
    """Lock owner rows in ascending id (PostgreSQL: ``FOR NO KEY UPDATE``; SQLite's write
    transaction already excludes other writers, and the read is as cheap as a statement
    gets, so both databases see the same statements)."""
    if not ids:
        return
    sql = f"SELECT id FROM {table} WHERE id IN ({placeholders(len(ids))}) ORDER BY id"
    if connection.features.has_select_for_no_key_update:
        sql += " FOR NO KEY UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, list(ids))


def _lock_classroom(classroom_id: int) -> str:
    """Lock a classroom's row (as ``_lock_rows`` does); its status."""
    sql = f"SELECT status FROM {CLASSROOM_TABLE} WHERE id = %s"
    if connection.features.has_select_for_no_key_update:
        sql += " FOR NO KEY UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [classroom_id])
        row = cursor.fetchone()
    return str(row[0]) if row else ""


def _lock_owner_to_settle(
    step: StepRow, outcome: Outcome
) -> tuple[JobPlan | Execution | None, bool]:
    """The record's first lock, the step's owner (the lock order), and whether that owner
    is paused (read where the outcome would arm the step again: a retry or a next
    check). A workflow's step reads its execution (what it does next); a recurring job,
    or a job whose check was not done or whose attempt will be retried, is read with its
    plan; any other job, or a classroom whose status a recording step's outcome changes
    or whose step will be retried, is only locked (a ping changes nothing of its
    classroom)."""
    if step.execution_id is not None:
        return executions.execution_lock(step.execution_id), False
    again = (RunStatus.NOT_DONE, RunStatus.RETRYING)
    if step.job_id is not None:
        if step.recurring or outcome.status in again:
            plan = job_plan_lock(step.job_id)
            return plan, plan.status == PlanStatus.PAUSED
        _lock_rows(JOB_TABLE, [step.job_id])
    elif step.action in RECORDING_ACTIONS or outcome.status == RunStatus.RETRYING:
        assert step.classroom_id is not None
        return None, _lock_classroom(step.classroom_id) == PlanStatus.PAUSED
    return None, False


def _why_not_settled(current: tuple[int, str] | None, run: Run) -> str:
    """Why an attempt's record left its step alone, from the step's (version, state) now."""
    lease_lost = current is not None and current[0] == run.version
    if lease_lost and current is not None and current[1] != StepState.CANCELLED:
        return "its lease expired and another attempt took over"
    return "the step was cancelled or rescheduled while it ran"


def _close_run(run: Run, step: StepRow, outcome: Outcome, started: dt.datetime) -> None:
    """The run's record of the outcome (saved by the caller)."""
    run.status = outcome.status
    run.result = outcome.result
    run.error = outcome.error[:10000]
    note = outcome.note
    run.note = (f"{run.note}; {note}" if run.note and note else run.note or note)[:300]
    run.started_at = started
    run.lateness = started - step.due_at
    run.engine_lateness = started - step.engine_due_at
    run.finished_at = timezone.now()


def _recorded(step: StepRow, run: Run, outcome: Outcome) -> None:
    """A run's outcome is recorded: log it, count it, and tell the application
    (schedules/events.py; the signals go out once the record has committed)."""
    log = logger.info if outcome.status == RunStatus.SUCCEEDED else logger.warning
    log(
        "step %s v%s on %s: %s attempt %s (late %.1f ms) %s",
        step.pk,
        run.version,
        step.engine,
        run.status,
        run.attempt,
        run.lateness.total_seconds() * 1000 if run.lateness else 0.0,
        outcome.error.splitlines()[0] if outcome.error else "",
    )
    metrics.run_recorded(run)
    events.send_on_commit(events.run_finished, Run, run=run)
    if run.status == RunStatus.FAILED and run.job_id is not None:
        events.send_on_commit(events.job_failed, Job, job_id=run.job_id, run=run)
    if run.uncertain:
        events.send_on_commit(events.run_uncertain, Run, run=run)


def _finish(step: StepRow, run: Run, action_outcome: Outcome, started: dt.datetime) -> Run:
    """Record the outcome: settle the step, plan what follows, save the run (owner first).

    Safe to call again after a failure: it reads only its arguments and the database.
    """
    outcome = dataclasses.replace(action_outcome)
    now = timezone.now()
    with transaction.atomic():
        owner, paused = _lock_owner_to_settle(step, outcome)
        plan = owner if isinstance(owner, JobPlan) else None
        execution = owner if isinstance(owner, Execution) else None
        if execution is not None and outcome.status == RunStatus.NOT_DONE:
            outcome.status = RunStatus.SUCCEEDED  # a workflow polls through its own Wait loop
        delay = None
        if outcome.status == RunStatus.RETRYING:
            delay = _retry_in(step, run, outcome.error, execution)
            if delay is None:
                outcome.status = RunStatus.FAILED
                attempts = f"{run.attempt} attempt{'s' if run.attempt > 1 else ''}"
                outcome.note = f"gave up after {attempts}"
        retry_at = check_again_at = None
        if outcome.status == RunStatus.NOT_DONE:
            check_again_at, why = _check_again_at(step, now)
            if check_again_at is None:
                outcome.status, outcome.error = RunStatus.FAILED, why
            elif paused:
                outcome.note = (
                    f"not done; the next check ({check_again_at:%H:%M:%S} UTC) is held while "
                    "the job is paused"
                )
            else:
                outcome.note = f"not done; checks again at {check_again_at:%H:%M:%S} UTC"
        if outcome.status in (RunStatus.SUCCEEDED, RunStatus.NOT_DONE):
            # A "not done" check ran well: the step is over, its job checks again.
            new_state = StepState.SUCCEEDED
        elif outcome.status == RunStatus.RETRYING:
            assert delay is not None
            retry_at = now + dt.timedelta(seconds=delay)
            if paused:  # held with no timer: the retry runs once its owner is resumed
                new_state = StepState.PAUSED
                outcome.note = (
                    f"attempt {run.attempt} of {step.max_attempts}; the retry is held while "
                    f"the {'job' if step.job_id else 'classroom'} is paused"
                )
            else:
                new_state = StepState.SCHEDULED
                outcome.note = (
                    f"attempt {run.attempt} of {step.max_attempts}; retry in {delay:.1f} s"
                )
        else:
            new_state = StepState.FAILED
        changed = _settle_step(step, run, new_state, retry_at)
        if changed and retry_at is not None:
            steps_sync_on_commit([step.pk])
        if not changed:
            current = Step.objects.filter(pk=step.pk).values_list("version", "state").first()
            why = _why_not_settled(current, run)
            outcome.note = f"{outcome.note}; {why}".lstrip("; ")
            if outcome.status == RunStatus.RETRYING:
                outcome.status = RunStatus.FAILED
        elif plan is not None and (step.recurring or check_again_at is not None):
            plans.step_settled(
                job=plan,
                sequence=step.sequence,
                poll_number=step.poll_number,
                due_at=step.due_at if retry_at is None else retry_at,
                recurring=step.recurring,
                state=new_state,
                taken_at=run.started_at,
                first_attempt=run.attempt == 1,
                check_again_at=check_again_at,
                error=outcome.error,
            )
        elif execution is not None:
            if new_state != StepState.SCHEDULED:
                executions.execution_step_settled(
                    execution=execution,
                    state_name=step.state_name,
                    sequence=step.sequence,
                    succeeded=new_state == StepState.SUCCEEDED,
                    result=outcome.result,
                    error=outcome.error,
                    now=now,
                )
        else:
            _refresh_owner(step, new_state)
        _close_run(run, step, outcome, started)
        _save_runs([run])
    _recorded(step, run, outcome)
    return run


def _retry_in(step: StepRow, run: Run, error: str, execution: Execution | None) -> float | None:
    """Seconds before the next attempt after a transient error, or None: no attempt
    left (a job's max_attempts; a workflow Task's retriers)."""
    if run.attempt >= step.max_attempts:
        return None
    if execution is None:
        return retry_delay(run.attempt)
    return executions.execution_retry_in(
        execution=execution, state_name=step.state_name, attempt=run.attempt, error=error
    )


def _retry_db(func: Callable[[], T], *, what: str, step_id: int, version: int) -> T:
    """``func()``, run again while the database fails (a restart, a broken connection, a
    conflict), with a growing pause, for up to SCHEDULES_DB_RETRY_SECONDS. Then the error
    propagates and the step is left to the recovery pass (its lease lapses)."""
    if connection.in_atomic_block:  # inside a caller's transaction: the caller retries
        return func()
    deadline = time.monotonic() + settings.SCHEDULES_DB_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            return func()
        except (OperationalError, InterfaceError) as exc:
            connection.close_if_unusable_or_obsolete()
            if time.monotonic() + pause > deadline:
                logger.error(
                    "step %s v%s: %s failed for %s s; giving up (the recovery pass takes it)",
                    step_id,
                    version,
                    what,
                    settings.SCHEDULES_DB_RETRY_SECONDS,
                )
                raise
            logger.warning(
                "step %s v%s: %s failed (%s: %s); trying again in %.1f s",
                step_id,
                version,
                what,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                pause,
            )
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _fence_and_claim(
    step_id: int, version: int, worker: str, attempted: list[int]
) -> tuple[StepRow, Run] | Run | None:
    """Fence, hold an early message until due, and claim. Returns the step as claimed
    and its open run; or the run recorded instead (skipped), or None if the step no
    longer exists. ``attempted`` remembers the attempt a claim tried, to recognise that
    claim if its commit was cut off."""
    step = _read_step(step_id)
    if step is None:
        logger.info("skipping step %s v%s: the step no longer exists", step_id, version)
        return None
    step_log_learned(job_id=step.job_id, engine=step.engine)
    if attempted:
        mine = _claimed_before(step, version, attempted[-1], worker)
        if mine is not None:
            return step, mine
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
    attempted.append(step.attempts + 1)
    run = _claim(step, version, now, worker)
    if run is None:
        # The step changed since it was read (during an early hold, say): say why.
        current = _read_step(step_id)
        if current is None:
            return None
        reason = _skip_reason(current, version, timezone.now())
        return _record_skip(current, version, reason or "another delivery claimed it first", worker)
    if run.status == RunStatus.SKIPPED:  # a missed occurrence its job skips
        logger.info("step %s v%s on %s: %s", step.pk, version, step.engine, run.note)
        return run
    step.attempts = run.attempt
    return step, run


def step_execute(
    *, step_id: int, version: int, worker: str = "", keeper: LeaseKeeper | None = None
) -> Run | None:
    """Run one delivery of ``(step_id, version)``. Returns the run recorded, if any.

    A stale, cancelled or duplicate delivery is recorded as a skipped run and
    not executed; a delivery that arrives before the due time is held (up to
    SCHEDULES_EARLY_HOLD_MAX) or re-armed. ``worker`` names the holder (default: this
    process); ``keeper`` renews the step's lease while the action runs. Every line
    logged meanwhile carries the step's ids (schedules/logcontext.py).
    """
    with step_log_context(step_id=step_id, version=version):
        return _step_execute(step_id=step_id, version=version, worker=worker, keeper=keeper)


def _step_execute(
    *, step_id: int, version: int, worker: str, keeper: LeaseKeeper | None
) -> Run | None:
    worker = worker or process_name("worker")
    attempted: list[int] = []
    taken = _retry_db(
        lambda: _fence_and_claim(step_id, version, worker, attempted),
        what="taking the step",
        step_id=step_id,
        version=version,
    )
    if not isinstance(taken, tuple):
        return taken
    step, run = taken
    if keeper is not None:
        keeper.hold([step_id])
    try:
        outcome, started = _run_action(step, run)
        # The action has run: from here on only the record is tried again, never the action.
        return _retry_db(
            lambda: _finish(step, run, outcome, started),
            what="recording the run",
            step_id=step_id,
            version=version,
        )
    finally:
        if keeper is not None:
            keeper.release([step_id])


# --- A message's steps together ------------------------------------------------------------
#
# A ``run_steps`` message carries steps released together, in due order. The plain ones
# (fresh at the message's version, not a recurring occurrence, whose claim consults its
# job's plan) are claimed together once due: one transaction locks their jobs, takes
# the steps with one version-fenced UPDATE and opens their runs with one INSERT. Their
# actions run in due order; the outcomes that close a step (succeeded, failed) are
# recorded together, one UPDATE per outcome kind, after the same fences as one by one.
# Every other step, and every other outcome, goes through the path above, unchanged.


def _plain(step: StepRow | None, version: int) -> bool:
    return (
        step is not None
        and step.version == version
        and step.state == StepState.QUEUED
        and not (step.recurring and step.poll_number == 0)
        and step.execution_id is None  # its record moves its execution on (``_finish``)
    )


def _set_jobs_status(job_ids: Sequence[int], status: str) -> None:
    """As ``_set_job_status``, for several jobs."""
    if not job_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {JOB_TABLE} SET status = %s WHERE id IN ({placeholders(len(job_ids))}) "
            "AND status NOT IN (%s, %s)",
            [status, *job_ids, *kept_statuses(status)],
        )


def _take_steps(steps: Sequence[StepRow], now: dt.datetime, worker: str) -> set[int]:
    """One UPDATE takes every step still queued at the version read; returns their ids."""
    lease_until = now + dt.timedelta(seconds=settings.SCHEDULES_LEASE_SECONDS)
    ids = [step.pk for step in steps]
    pairs = ", ".join(["(%s, %s)"] * len(steps))
    # "id IN" first: SQLite finds the rows by key (the pairs alone would walk an index).
    where = f"id IN ({placeholders(len(ids))}) AND (id, version) IN (VALUES {pairs}) AND state = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET state = %s, holder = %s, lease_until = %s, "
            "attempts = attempts + 1, queued_at = NULL "
            f"WHERE {locked_in_order(where)} RETURNING id",
            [
                StepState.RUNNING.value,
                worker,
                to_db(Step, "lease_until", lease_until),
                *ids,
                *(n for step in steps for n in (step.pk, step.version)),
                StepState.QUEUED.value,
            ],
        )
        return {pk for (pk,) in cursor.fetchall()}


def _insert_runs(runs: Sequence[Run]) -> None:
    """One INSERT opens every run; sets each run's pk."""
    row = f"({placeholders(len(RUN_COLUMNS.split(',')))})"
    values = [value for run in runs for value in _run_values(run)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {RUN_TABLE} ({RUN_COLUMNS}) VALUES {', '.join([row] * len(runs))} "
            "RETURNING id, step_id",
            values,
        )
        ids = {step_id: pk for pk, step_id in cursor.fetchall()}
    for run in runs:
        run.pk = ids[run.step_id]


def claim_ahead() -> float:
    """Seconds before their due time a worker claims plain steps due together, to commit
    the claim at the due time (SCHEDULES_CLAIM_AHEAD; ``_claim_together``). 0 on
    SQLite, where the open transaction would hold the database's one write lock."""
    if connection.vendor != "postgresql":
        return 0.0
    ahead: float = settings.SCHEDULES_CLAIM_AHEAD
    return ahead


def _claim_together(
    steps: Sequence[StepRow], now: dt.datetime, worker: str, start_at: dt.datetime | None = None
) -> list[tuple[StepRow, Run]]:
    """Take the steps and open their runs in one transaction (owners first, then steps in
    ascending id, then runs). A step another delivery changed meanwhile is left out.

    With ``start_at`` (a claim made ahead, ``claim_ahead``), the transaction's statements
    run now and it commits at ``start_at``, never before: only the commit is left between
    the due time and the action. Meanwhile the rows stay locked, so a cancel, an edit or
    a pause of the job waits for the commit and finds the attempt running, as one that
    came just after the due time does."""
    if start_at is not None:
        now = max(now, start_at)  # the runs open at the due time
    with transaction.atomic():
        _lock_rows(JOB_TABLE, sorted({s.job_id for s in steps if s.job_id is not None}))
        taken = _take_steps(steps, now, worker)
        claimed = [step for step in steps if step.pk in taken]
        _set_jobs_status(
            sorted({s.job_id for s in claimed if s.job_id is not None}),
            PlanStatus.RUNNING.value,
        )
        runs = [_opened_run(step, step.version, now, worker) for step in claimed]
        if runs:
            _insert_runs(runs)
            if start_at is not None:
                _sleep_until(start_at)
    return list(zip(claimed, runs, strict=True))


def _sleep_until(moment: dt.datetime) -> None:
    delay = (moment - timezone.now()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def _claimed_together_before(
    steps: Sequence[StepRow], tried: dict[int, int], worker: str
) -> tuple[list[tuple[StepRow, Run]], list[StepRow]]:
    """After a claim whose commit may or may not have happened (``tried``: the attempt it
    tried for each step): the steps it did take (with their runs), and the rest that can
    still be claimed, as they are now."""
    now_rows = _read_steps([step.pk for step in steps])
    mine: list[tuple[StepRow, Run]] = []
    rest: list[StepRow] = []
    for step in steps:
        current = now_rows.get(step.pk)
        run = (
            _claimed_before(current, step.version, tried[step.pk], worker)
            if current is not None
            else None
        )
        if current is not None and run is not None:
            mine.append((current, run))
        elif _plain(current, step.version):
            assert current is not None
            rest.append(current)
    return mine, rest


def _payloads_for(steps: Sequence[StepRow]) -> dict[int, dict[str, Any]]:
    """The jobs' payloads by step id, in one read (a classroom step reads its own)."""
    job_ids = sorted({step.job_id for step in steps if step.job_id is not None})
    if not job_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, payload FROM {JOB_TABLE} WHERE id IN ({placeholders(len(job_ids))})",
            job_ids,
        )
        by_job = {pk: json_from_db(raw) for pk, raw in cursor.fetchall()}
    return {step.pk: by_job[step.job_id] for step in steps if step.job_id in by_job}


#: A group's finished runs wait at most this long (seconds) to be recorded together: the
#: longer they wait, the more a worker that dies takes unrecorded with it (taken over,
#: flagged uncertain).
RECORD_EVERY = 0.5
#: Outcomes recorded together: they close the step and set the job's status, no plan.
CLOSING = {RunStatus.SUCCEEDED: StepState.SUCCEEDED, RunStatus.FAILED: StepState.FAILED}


def _closes_together(step: StepRow, outcome: Outcome) -> bool:
    return step.job_id is not None and not step.recurring and outcome.status in CLOSING


def _settle_steps(done: Sequence[tuple[StepRow, Run]], state: str) -> set[int]:
    """One UPDATE settles every step of ``done`` still at its run's version and attempt."""
    ids = [step.pk for step, _ in done]
    fences = ", ".join(["(%s, %s, %s)"] * len(done))
    where = (
        f"id IN ({placeholders(len(ids))}) AND (id, version, attempts) IN (VALUES {fences}) "
        "AND state = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET state = %s, holder = '', lease_until = NULL "
            f"WHERE {locked_in_order(where)} RETURNING id",
            [
                state,
                *ids,
                *(n for step, run in done for n in (step.pk, run.version, run.attempt)),
                StepState.RUNNING.value,
            ],
        )
        return {pk for (pk,) in cursor.fetchall()}


#: The run columns a record writes, after the id, with PostgreSQL's type for each (a
#: VALUES list's text would not be cast to them by itself).
SAVED_RUN_COLUMNS = (
    ("status", ""),
    ("result", "::jsonb"),
    ("error", ""),
    ("note", ""),
    ("started_at", "::timestamptz"),
    ("lateness", "::interval"),
    ("engine_lateness", "::interval"),
    ("finished_at", "::timestamptz"),
)


def _save_runs(runs: Sequence[Run]) -> None:
    """Write the runs' outcomes: one UPDATE for all of them on PostgreSQL (from a VALUES
    list), one prepared UPDATE run for each on SQLite (in process, no round trips)."""
    rows = [
        [
            run.pk,
            run.status,
            to_db(Run, "result", run.result),
            run.error,
            run.note,
            to_db(Run, "started_at", run.started_at),
            to_db(Run, "lateness", run.lateness),
            to_db(Run, "engine_lateness", run.engine_lateness),
            to_db(Run, "finished_at", run.finished_at),
        ]
        for run in runs
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A VALUES list names its columns column1, column2, ... (column1: the id).
            sets = ", ".join(
                f"{name} = v.column{n}{cast}"
                for n, (name, cast) in enumerate(SAVED_RUN_COLUMNS, start=2)
            )
            row = f"({placeholders(len(SAVED_RUN_COLUMNS) + 1)})"
            cursor.execute(
                f"UPDATE {RUN_TABLE} SET {sets} FROM (VALUES {', '.join([row] * len(rows))}) "
                f"AS v WHERE {RUN_TABLE}.id = v.column1",
                [value for values in rows for value in values],
            )
            return
        sets = ", ".join(f"{name} = %s" for name, _ in SAVED_RUN_COLUMNS)
        cursor.executemany(
            f"UPDATE {RUN_TABLE} SET {sets} WHERE id = %s",
            [[*values[1:], values[0]] for values in rows],
        )


def _finish_together(done: Sequence[tuple[StepRow, Run, Outcome, dt.datetime]]) -> list[Run]:
    """Record outcomes that close their steps (``_closes_together``) in one transaction:
    jobs locked first, then one UPDATE of the steps per outcome kind, one of the jobs per
    kind, then the runs. Safe to call again after a failure, like ``_finish``."""
    runs: list[Run] = []
    with transaction.atomic():
        _lock_rows(JOB_TABLE, sorted({step.job_id for step, *_ in done if step.job_id}))
        settled: set[int] = set()
        for status, state in CLOSING.items():
            kind = [(step, run) for step, run, outcome, _ in done if outcome.status == status]
            if kind:
                ids = _settle_steps(kind, state.value)
                settled |= ids
                job_ids = sorted({s.job_id for s, _ in kind if s.pk in ids and s.job_id})
                _set_jobs_status(job_ids, PlanStatus(state.value).value)
        unsettled = [step.pk for step, *_ in done if step.pk not in settled]
        current = {pk: (row.version, row.state) for pk, row in _read_steps(unsettled).items()}
        for step, run, outcome, started in done:
            if step.pk not in settled:
                why = _why_not_settled(current.get(step.pk), run)
                outcome = dataclasses.replace(outcome, note=f"{outcome.note}; {why}".lstrip("; "))
            _close_run(run, step, outcome, started)
            runs.append(run)
        _save_runs(runs)
    for step, run, outcome, _ in done:
        with step_log_context(
            step_id=step.pk, version=run.version, job_id=step.job_id, engine=step.engine
        ):
            _recorded(step, run, outcome)
    return runs


def _give_back(unstarted: Sequence[tuple[StepRow, Run]], worker: str) -> None:
    """Claimed steps whose actions never started (the message ran out of time): queued
    again as they were, still held by ``worker`` (which hands them to a new message), and
    their runs deleted: nothing ran. Owners first, then steps, then runs."""
    job_ids = sorted({step.job_id for step, _ in unstarted if step.job_id is not None})
    ids = [step.pk for step, _ in unstarted]
    fences = ", ".join(["(%s, %s, %s)"] * len(unstarted))
    where = (
        f"id IN ({placeholders(len(ids))}) AND (id, version, attempts) IN (VALUES {fences}) "
        "AND state = %s AND holder = %s"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        _lock_rows(JOB_TABLE, job_ids)
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET state = %s, attempts = attempts - 1 "
            f"WHERE {locked_in_order(where)} RETURNING id",
            [
                StepState.QUEUED.value,
                *ids,
                *(n for step, run in unstarted for n in (step.pk, run.version, run.attempt)),
                StepState.RUNNING.value,
                worker,
            ],
        )
        back = {pk for (pk,) in cursor.fetchall()}
        if job_ids:
            cursor.execute(
                f"UPDATE {JOB_TABLE} SET status = %s WHERE id IN ({placeholders(len(job_ids))}) "
                "AND status = %s",
                [PlanStatus.SCHEDULED.value, *job_ids, PlanStatus.RUNNING.value],
            )
        runs = [run.pk for step, run in unstarted if step.pk in back]
        if runs:
            cursor.execute(
                f"DELETE FROM {RUN_TABLE} WHERE id IN ({placeholders(len(runs))}) AND status = %s",
                [*runs, RunStatus.RUNNING.value],
            )


def _execute_together(
    steps: Sequence[StepRow],
    worker: str,
    keeper: LeaseKeeper | None,
    deadline: float | None = None,
    start_at: dt.datetime | None = None,
) -> list[tuple[int, int]]:
    """Claim due plain steps together (ahead of ``start_at``, their due time, if given),
    run their actions in order, record them together. Once ``deadline`` has passed, the
    steps not started are given back; returns them."""
    first = steps[0]
    tried: dict[int, int] = {}  # the attempt a claim tried, per step

    def claim() -> list[tuple[StepRow, Run]]:
        if tried:  # a claim before this one may have committed: recognise it
            mine, rest = _claimed_together_before(steps, tried, worker)
        else:
            mine, rest = [], list(steps)
        tried.update({step.pk: step.attempts + 1 for step in rest})
        if not rest:
            return mine
        return mine + _claim_together(rest, timezone.now(), worker, start_at)

    claimed = _retry_db(claim, what="taking the steps", step_id=first.pk, version=first.version)
    claimed_ids = {step.pk for step, _ in claimed}
    for step in steps:
        if step.pk not in claimed_ids:  # changed since it was read: the one-by-one path says why
            step_execute(step_id=step.pk, version=step.version, worker=worker, keeper=keeper)
    if not claimed:
        return []
    if keeper is not None:  # (the message's steps are held already, unless that failed)
        keeper.hold([step.pk for step, _ in claimed])
    payloads = _retry_db(
        lambda: _payloads_for([step for step, _ in claimed]),
        what="reading the payloads",
        step_id=first.pk,
        version=first.version,
    )
    together: list[tuple[StepRow, Run, Outcome, dt.datetime]] = []
    recorded_at = time.monotonic()

    def record_together() -> None:
        nonlocal recorded_at
        if together:
            done = list(together)
            _retry_db(
                lambda: _finish_together(done),
                what="recording the runs",
                step_id=done[0][0].pk,
                version=done[0][1].version,
            )
            together.clear()
        recorded_at = time.monotonic()

    for index, (step, run) in enumerate(claimed):
        if index and deadline is not None and time.monotonic() > deadline:
            record_together()
            unstarted = claimed[index:]
            _retry_db(
                functools.partial(_give_back, unstarted, worker),
                what="giving back the steps not started",
                step_id=step.pk,
                version=run.version,
            )
            return [(s.pk, r.version) for s, r in unstarted]
        with step_log_context(
            step_id=step.pk, version=run.version, job_id=step.job_id, engine=step.engine
        ):
            outcome, started = _run_action(step, run, payloads.get(step.pk))
            # The action has run: from here on only the record is tried again, never the action.
            if _closes_together(step, outcome):
                together.append((step, run, outcome, started))
                if time.monotonic() - recorded_at >= RECORD_EVERY:
                    record_together()  # a slow group does not keep finished runs unrecorded
                continue
            _retry_db(
                lambda step=step, run=run, outcome=outcome, started=started: _finish(  # type: ignore[misc]
                    step, run, outcome, started
                ),
                what="recording the run",
                step_id=step.pk,
                version=run.version,
            )
    record_together()
    return []


def steps_execute(
    *,
    pairs: Sequence[Sequence[int]],
    worker: str = "",
    keeper: LeaseKeeper | None = None,
    deadline: float | None = None,
) -> list[tuple[int, int]]:
    """Run the deliveries of a message's ``(step_id, version)`` pairs, in their order.

    Plain steps due by now are claimed, run and recorded together (above); on PostgreSQL
    they are claimed ``claim_ahead()`` before they are due, the claim committing at the
    due time. Any other step (stale, cancelled, already running, a recurring occurrence)
    goes through ``step_execute`` at its turn, with the same fences. A step due soon is
    waited for (up to SCHEDULES_EARLY_HOLD_MAX). Stops before the next group once
    ``deadline`` (``time.monotonic()``) has passed and returns the pairs not started.
    """
    worker = worker or process_name("worker")
    ahead = claim_ahead()
    order = [(int(pk), int(version)) for pk, version in pairs]
    read = _retry_db(
        lambda: _read_steps([pk for pk, _ in order]),
        what="reading the steps",
        step_id=order[0][0] if order else 0,
        version=order[0][1] if order else 0,
    )
    index = 0
    while index < len(order):
        if index and deadline is not None and time.monotonic() > deadline:
            return order[index:]
        pk, version = order[index]
        step = read.get(pk)
        now = timezone.now()
        if _plain(step, version):
            assert step is not None
            early = (step.due_at - now).total_seconds()
            if ahead < early <= settings.SCHEDULES_EARLY_HOLD_MAX:
                time.sleep(early - ahead)
                continue
            if early <= ahead:
                # The steps due by now, or (claimed ahead) due with this one.
                start_at = max(now, step.due_at)
                group: list[StepRow] = []
                while index < len(order):
                    pk, version = order[index]
                    step = read.get(pk)
                    if not _plain(step, version):
                        break
                    assert step is not None
                    if step.due_at > start_at:
                        break
                    group.append(step)
                    index += 1
                given_back = _execute_together(
                    group, worker, keeper, deadline, start_at if start_at > now else None
                )
                if keeper is not None:
                    keeper.release(s.pk for s in group)
                if given_back:
                    return given_back + order[index:]
                continue
        step_execute(step_id=pk, version=version, worker=worker, keeper=keeper)
        if keeper is not None:
            keeper.release([pk])
        index += 1
    return []
