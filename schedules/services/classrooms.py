"""Writes on classrooms: create, update (re-plans future steps only), cancel.

A classroom expands to one step per timed action: ``start_recording`` at the
start, ``live_ping`` every ``live_ping_interval`` seconds strictly between
start and end (the first one interval after the start), ``stop_recording`` at
the end.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..engines import engine_name_for_precision
from ..models import PENDING_STATES, Classroom, PlanStatus, Precision, Step, StepState
from ..validation import Errors, check_aware, check_due, check_precision, check_time_zone
from .sync import steps_sync_on_commit

START, PING, STOP = "start_recording", "live_ping", "stop_recording"


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


@transaction.atomic
def classroom_create(
    *,
    title: str,
    start: dt.datetime,
    end: dt.datetime,
    recording_service_ref: str,
    live_ping_interval: int = 60,
    precision: str = Precision.PRECISE,
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
    steps = Step.objects.bulk_create(
        [_new_step(classroom, p) for p in classroom_timeline(s, e, live_ping_interval)]
    )
    # bulk_create sends no post_save: sync explicitly.
    steps_sync_on_commit(step.pk for step in steps)
    return classroom


@transaction.atomic
def classroom_update(
    *,
    classroom: Classroom,
    title: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    recording_service_ref: str | None = None,
    live_ping_interval: int | None = None,
) -> Classroom:
    """Change a classroom. Steps not yet run are re-planned; steps that ran keep their history."""
    classroom = Classroom.objects.select_for_update().get(pk=classroom.pk)
    if classroom.status in (PlanStatus.CANCELLED, PlanStatus.SUCCEEDED, PlanStatus.FAILED):
        raise ValidationError({"status": f"the classroom is {classroom.status}; it cannot change"})
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
    s, e = classroom_validate(
        **new,
        precision=classroom.precision,
        time_zone=classroom.time_zone,
        start_is_past_ok=start is None or start == classroom.start,
    )
    for field, value in new.items():
        setattr(classroom, field, value)
    classroom.start, classroom.end = s, e
    classroom.save()
    _replan(classroom)
    return classroom


@transaction.atomic
def classroom_shift(*, classroom: Classroom, by: dt.timedelta) -> Classroom:
    """Move a classroom by ``by``: start and end, or only the end once it is live."""
    classroom = Classroom.objects.select_for_update().get(pk=classroom.pk)
    if classroom.status == PlanStatus.RUNNING:
        return classroom_update(classroom=classroom, end=classroom.end + by)
    return classroom_update(classroom=classroom, start=classroom.start + by, end=classroom.end + by)


def _replan(classroom: Classroom) -> None:
    now = timezone.now()
    existing = {
        (step.action, step.sequence): step
        for step in Step.objects.select_for_update().filter(classroom=classroom)
    }
    changed: list[int] = []
    created: list[Step] = []
    for planned in classroom_timeline(classroom.start, classroom.end, classroom.live_ping_interval):
        step = existing.pop((planned.action, planned.sequence), None)
        if step is None:
            if planned.due_at > now or planned.action != PING:
                created.append(_new_step(classroom, planned))
        elif (step.state in PENDING_STATES and step.due_at != planned.due_at) or (
            # dropped by an earlier update and wanted again
            step.state == StepState.CANCELLED and planned.due_at > now
        ):
            changed.append(step.pk)
            Step.objects.filter(pk=step.pk).update(
                due_at=planned.due_at,
                state=StepState.SCHEDULED,
                queued_at=None,
                version=F("version") + 1,
            )
    # Steps that the new timeline no longer has: cancel those not yet run.
    dropped = [s.pk for s in existing.values() if s.state in PENDING_STATES]
    Step.objects.filter(pk__in=dropped).update(state=StepState.CANCELLED, version=F("version") + 1)
    created = Step.objects.bulk_create(created)
    steps_sync_on_commit([*changed, *dropped, *(s.pk for s in created)])


@transaction.atomic
def classroom_cancel(*, classroom: Classroom) -> Classroom:
    """Cancel a classroom. If its recording started, it is stopped now."""
    classroom = Classroom.objects.select_for_update().get(pk=classroom.pk)
    if classroom.status in (PlanStatus.CANCELLED, PlanStatus.SUCCEEDED, PlanStatus.FAILED):
        raise ValidationError(
            {"status": f"the classroom is already {classroom.status}; nothing to cancel"}
        )
    steps = Step.objects.select_for_update().filter(classroom=classroom)
    started = (
        steps.filter(action=START)
        .exclude(state__in=[*PENDING_STATES, StepState.CANCELLED])
        .exists()
    )
    pending = list(steps.filter(state__in=PENDING_STATES).values_list("pk", flat=True))
    stop = steps.filter(action=STOP, state__in=PENDING_STATES).first()
    keep = stop.pk if (started and stop is not None) else None
    Step.objects.filter(pk__in=[pk for pk in pending if pk != keep]).update(
        state=StepState.CANCELLED, version=F("version") + 1
    )
    if keep is not None:
        Step.objects.filter(pk=keep).update(
            due_at=timezone.now(),
            state=StepState.SCHEDULED,
            queued_at=None,
            version=F("version") + 1,
        )
    classroom.status = PlanStatus.CANCELLED
    classroom.save(update_fields=["status", "updated_at"])
    steps_sync_on_commit(pending)
    return classroom
