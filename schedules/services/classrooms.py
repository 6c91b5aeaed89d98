"""Writes on classrooms: create, update (re-plans future steps only), cancel.

A classroom expands to one step per timed action: ``start_recording`` at the
start, ``live_ping`` every ``live_ping_interval`` seconds strictly between
start and end (the first one interval after the start), ``stop_recording`` at
the end. Once the recording has started the class is live: its start and its
recording reference are fixed, and a change re-plans only pings due after now
and the stop; steps that ran keep their history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from ..engines import engine_name_for_precision
from ..models import (
    PENDING_STATES,
    WAITING_STATES,
    Classroom,
    PlanStatus,
    Precision,
    Run,
    RunStatus,
    Step,
    StepState,
)
from ..validation import Errors, check_aware, check_due, check_precision, check_time_zone
from .sync import steps_sync_on_commit
from .transactions import retrying

START, PING, STOP = "start_recording", "live_ping", "stop_recording"
# A class is live once its start_recording step runs or has run: its start is then fixed.
RECORDING_STARTED = (StepState.RUNNING, StepState.SUCCEEDED)
CLOSED = (PlanStatus.CANCELLED, PlanStatus.SUCCEEDED, PlanStatus.FAILED)
#: A step moved back to scheduled is in flight no more: not queued, held by nobody.
UNHELD: dict[str, Any] = {"queued_at": None, "holder": "", "lease_until": None}


class PlannedStep(NamedTuple):
    action: str
    sequence: int
    due_at: dt.datetime


def classroom_step_count(start: dt.datetime, end: dt.datetime, interval: int) -> int:
    """How many steps ``classroom_timeline`` makes, computed without making them."""
    span = end - start
    every = dt.timedelta(seconds=interval)
    if span <= dt.timedelta(0):
        return 2
    pings = -(-span // every) - 1  # k >= 1 with k * every < span
    return 2 + pings


def classroom_timeline(start: dt.datetime, end: dt.datetime, interval: int) -> list[PlannedStep]:
    """The steps of a class, in time order (check ``classroom_step_count`` first)."""
    steps = [PlannedStep(START, 0, start)]
    every = dt.timedelta(seconds=interval)
    k = 1
    while start + k * every < end:
        steps.append(PlannedStep(PING, k, start + k * every))
        k += 1
    steps.append(PlannedStep(STOP, 0, end))
    return steps


def classroom_validate(
    *,
    title: str,
    start: Any,
    end: Any,
    recording_service_ref: str,
    live_ping_interval: Any,
    precision: str,
    time_zone: str,
    start_is_past_ok: bool = False,
) -> tuple[dt.datetime, dt.datetime]:
    now = timezone.now()
    errors = Errors()
    if not title.strip():
        errors.add("title", "must not be empty")
    elif len(title) > 200:
        errors.add("title", f"is {len(title)} characters; the limit is 200")
    if not recording_service_ref.strip():
        errors.add("recording_service_ref", "must not be empty")
    elif len(recording_service_ref) > 200:
        errors.add("recording_service_ref", "is longer than 200 characters")
    if start_is_past_ok:  # an unchanged start of a class that may already be live
        s = check_aware(errors, "start", start)
    else:
        s = check_due(errors, "start", start, now=now)
    e = check_due(errors, "end", end, now=now)
    if s is not None and e is not None and e <= s:
        errors.add("end", "must be after the start")
    minimum = settings.SCHEDULES_MIN_PING_INTERVAL
    if (
        not isinstance(live_ping_interval, int)
        or isinstance(live_ping_interval, bool)
        or live_ping_interval < minimum
    ):
        errors.add(
            "live_ping_interval",
            f"must be a whole number of seconds, at least {minimum} (SCHEDULES_MIN_PING_INTERVAL)",
        )
    elif s is not None and e is not None and e > s:
        count = classroom_step_count(s, e, live_ping_interval)
        limit = settings.SCHEDULES_MAX_STEPS_PER_CLASSROOM
        if count > limit:
            errors.add(
                "live_ping_interval",
                f"gives {count} steps for this class; the limit is {limit} "
                "(SCHEDULES_MAX_STEPS_PER_CLASSROOM): use a longer interval",
            )
    check_precision(errors, "precision", precision)
    check_time_zone(errors, "time_zone", time_zone)
    errors.raise_if_any()
    assert s is not None and e is not None
    return s, e


def _new_step(classroom: Classroom, planned: PlannedStep) -> Step:
    return Step(
        classroom=classroom,
        action=planned.action,
        sequence=planned.sequence,
        due_at=planned.due_at,
        precision=classroom.precision,
        engine=engine_name_for_precision(classroom.precision),
        max_attempts=settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS,
    )


@retrying
def classroom_create(
    *,
    title: str,
    start: dt.datetime,
    end: dt.datetime,
    recording_service_ref: str,
    live_ping_interval: int = 60,
    precision: str = Precision.SECONDS,
    time_zone: str = "UTC",
    owner: User | None = None,
) -> Classroom:
    s, e = classroom_validate(
        title=title,
        start=start,
        end=end,
        recording_service_ref=recording_service_ref,
        live_ping_interval=live_ping_interval,
        precision=precision,
        time_zone=time_zone,
    )
    classroom = Classroom.objects.create(
        title=title,
        start=s,
        end=e,
        recording_service_ref=recording_service_ref,
        live_ping_interval=live_ping_interval,
        precision=precision,
        time_zone=time_zone,
        owner=owner,
    )
    now = timezone.now()
    planned = classroom_timeline(s, e, live_ping_interval)
    # A start within the grace is past: its pings due by now are not sent late, at once.
    steps = Step.objects.bulk_create(
        [_new_step(classroom, p) for p in planned if p.action != PING or p.due_at > now]
    )
    # bulk_create sends no post_save: sync explicitly.
    steps_sync_on_commit(step.pk for step in steps)
    return classroom


@retrying
def classroom_update(
    *,
    classroom: Classroom,
    title: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    recording_service_ref: str | None = None,
    live_ping_interval: int | None = None,
) -> Classroom:
    """Change a classroom. Steps not yet run are re-planned; steps that ran keep their history.

    Once the recording has started its start and its recording reference are fixed; once
    it is being stopped its timeline is. A refused change writes nothing.
    """
    classroom = Classroom.objects.select_for_update(no_key=True).get(pk=classroom.pk)
    if classroom.status in CLOSED:
        raise ValidationError({"status": f"the classroom is {classroom.status}; it cannot change"})
    if classroom.status == PlanStatus.PAUSED:
        raise ValidationError(
            {"status": "the classroom is paused: resume it first, then change it"}
        )
    new: dict[str, Any] = {
        "title": classroom.title if title is None else title,
        "start": classroom.start if start is None else start,
        "end": classroom.end if end is None else end,
        "recording_service_ref": (
            classroom.recording_service_ref
            if recording_service_ref is None
            else recording_service_ref
        ),
        "live_ping_interval": (
            classroom.live_ping_interval if live_ping_interval is None else live_ping_interval
        ),
    }
    steps = list(
        Step.objects.select_for_update(no_key=True).filter(classroom=classroom).order_by("pk")
    )
    _check_live_change(classroom, steps, new)
    s, e = classroom_validate(
        **new,
        precision=classroom.precision,
        time_zone=classroom.time_zone,
        start_is_past_ok=start is None or start == classroom.start,
    )
    before = (classroom.start, classroom.end, classroom.live_ping_interval)
    for field, value in new.items():
        setattr(classroom, field, value)
    classroom.start, classroom.end = s, e
    classroom.save()
    if (s, e, classroom.live_ping_interval) != before:
        _replan(classroom, steps, before=classroom_timeline(*before))
    return classroom


@retrying
def classroom_shift(*, classroom: Classroom, by: dt.timedelta) -> Classroom:
    """Move a classroom by ``by``: start and end, or only the end once it is live."""
    classroom = Classroom.objects.select_for_update(no_key=True).get(pk=classroom.pk)
    if _recording_started(classroom):
        return classroom_update(classroom=classroom, end=classroom.end + by)
    return classroom_update(classroom=classroom, start=classroom.start + by, end=classroom.end + by)


def _recording_started(classroom: Classroom) -> bool:
    """Whether the class is live: its start_recording step is running or has run."""
    return Step.objects.filter(
        classroom=classroom, action=START, state__in=RECORDING_STARTED
    ).exists()


def _started_at(steps: Iterable[Step], states: Collection[str]) -> dt.datetime | None:
    """When the first of ``steps`` in one of ``states`` began to run (None: none is).

    The time of its first attempt, or its due time if no attempt is recorded.
    """
    step = next((s for s in steps if s.state in states), None)
    if step is None:
        return None
    first = (
        Run.objects.filter(step=step)
        .exclude(status=RunStatus.SKIPPED)
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    return first or step.due_at


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _check_live_change(classroom: Classroom, steps: list[Step], new: dict[str, Any]) -> None:
    """Refuse what a class whose recording started (or is stopping) can no longer change."""
    errors = Errors()
    started = _started_at((s for s in steps if s.action == START), RECORDING_STARTED)
    if started is not None:
        if new["start"] != classroom.start:
            errors.add(
                "start",
                f"the recording already started at {_when(started)}; "
                "a live class can only move its end",
            )
        if new["recording_service_ref"] != classroom.recording_service_ref:
            errors.add(
                "recording_service_ref",
                f"the recording already started at {_when(started)} as "
                f"{classroom.recording_service_ref!r}; it cannot change while the class is "
                "live (the stop must reach the same recording)",
            )
    stopping = _started_at((s for s in steps if s.action == STOP), [StepState.RUNNING])
    if stopping is not None:
        for field in ("start", "end", "live_ping_interval"):
            if new[field] != getattr(classroom, field) and field not in errors:
                errors.add(
                    field,
                    f"the recording is being stopped (since {_when(stopping)}); "
                    "the class's timeline can no longer change",
                )
    errors.raise_if_any()


class _Plan(NamedTuple):
    """What a re-plan writes: steps moved to a new time, steps cancelled, steps to create."""

    moved: dict[int, dt.datetime]
    cancelled: list[int]
    created: list[Step]


def _replan(classroom: Classroom, steps: list[Step], *, before: list[PlannedStep]) -> None:
    """Re-plan the classroom's ``steps`` (locked) from the timeline ``before`` to its own.

    A step not yet run moves (under a new version) only if its planned time changed, so a
    step waiting for a retry keeps its retry time. A ping whose new time is not after now is
    cancelled, never fired late. A future ping whose (action, sequence) is held by a ping
    that already ran is planned beside it. Steps that ran or are running are not touched.
    """
    now = timezone.now()
    was = {(p.action, p.sequence): p.due_at for p in before}
    reusable, ran, extra = _steps_by_key(steps)
    plan = _Plan({}, [s.pk for s in extra if s.state in PENDING_STATES], [])
    for planned in classroom_timeline(classroom.start, classroom.end, classroom.live_ping_interval):
        key = (planned.action, planned.sequence)
        wanted = planned.action != PING or planned.due_at > now
        step = reusable.pop(key, None)
        if step is None:
            if wanted and (key not in ran or planned.action == PING):
                plan.created.append(_new_step(classroom, planned))
        elif step.state == StepState.CANCELLED:
            if planned.due_at > now:  # dropped by an earlier update and wanted again
                plan.moved[step.pk] = planned.due_at
        elif was.get(key) != planned.due_at:
            if wanted:
                plan.moved[step.pk] = planned.due_at
            else:
                plan.cancelled.append(step.pk)
    # Steps that the new timeline no longer has: cancel those not yet run.
    plan.cancelled.extend(s.pk for s in reusable.values() if s.state in PENDING_STATES)
    _plan_write(plan)


def _steps_by_key(
    steps: list[Step],
) -> tuple[dict[tuple[str, int], Step], set[tuple[str, int]], list[Step]]:
    """The steps a re-plan may change (pending or cancelled) by (action, sequence), the keys
    of steps that ran or are running, and any second re-plannable step of a key."""
    reusable: dict[tuple[str, int], Step] = {}
    ran: set[tuple[str, int]] = set()
    extra: list[Step] = []
    for step in sorted(steps, key=lambda s: s.pk):
        key = (step.action, step.sequence)
        if step.state not in (*PENDING_STATES, StepState.CANCELLED):
            ran.add(key)
        elif key in reusable:
            extra.append(step)
        else:
            reusable[key] = step
    return reusable, ran, extra


def _plan_write(plan: _Plan) -> None:
    """Every move and cancel bumps the version, so a message already sent is skipped."""
    for pk, due_at in plan.moved.items():
        Step.objects.filter(pk=pk).update(
            due_at=due_at, version=F("version") + 1, state=StepState.SCHEDULED, **UNHELD
        )
    Step.objects.filter(pk__in=plan.cancelled).update(
        state=StepState.CANCELLED, version=F("version") + 1, holder="", lease_until=None
    )
    created = Step.objects.bulk_create(plan.created)
    # update() and bulk_create send no post_save: sync explicitly.
    steps_sync_on_commit([*plan.moved, *plan.cancelled, *(s.pk for s in created)])


@retrying
def classroom_cancel(*, classroom: Classroom) -> Classroom:
    """Cancel a classroom. If its recording started, it is stopped now."""
    classroom = Classroom.objects.select_for_update(no_key=True).get(pk=classroom.pk)
    if classroom.status in CLOSED:
        raise ValidationError(
            {"status": f"the classroom is already {classroom.status}; nothing to cancel"}
        )
    # All steps locked before deciding: a worker's claim of the start waits for this commit
    # (and then misses the bumped version) or has already committed and is seen here.
    steps = list(
        Step.objects.select_for_update(no_key=True).filter(classroom=classroom).order_by("pk")
    )
    started = any(s.action == START and s.state in RECORDING_STARTED for s in steps)
    pending = [s.pk for s in steps if s.state in WAITING_STATES]  # held ones too
    stop = next((s for s in steps if s.action == STOP and s.state in WAITING_STATES), None)
    keep = stop.pk if (started and stop is not None) else None
    Step.objects.filter(pk__in=[pk for pk in pending if pk != keep]).update(
        state=StepState.CANCELLED, version=F("version") + 1, holder="", lease_until=None
    )
    if keep is not None:
        Step.objects.filter(pk=keep).update(
            due_at=timezone.now(), version=F("version") + 1, state=StepState.SCHEDULED, **UNHELD
        )
    classroom.status = PlanStatus.CANCELLED
    classroom.save(update_fields=["status", "updated_at"])
    steps_sync_on_commit(pending)
    return classroom
