"""Classrooms expand to start, pings and stop; updates re-plan only what has not run."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from schedules import services
from schedules.models import ArmState, Classroom, PlanStatus, RunStatus, Step, StepState

pytestmark = pytest.mark.django_db(transaction=True)


def make(start: dt.datetime, minutes: float = 5, interval: int = 60, **kw: object) -> Classroom:
    return services.classroom_create(
        title="Maths",
        start=start,
        end=start + dt.timedelta(minutes=minutes),
        recording_service_ref="room-42",
        live_ping_interval=interval,
        **kw,
    )


def timeline(classroom: Classroom) -> list[tuple[str, float]]:
    return [
        (s.action, (s.due_at - classroom.start).total_seconds())
        for s in classroom.steps.exclude(state=StepState.CANCELLED).order_by("due_at", "pk")
    ]


def test_classroom_expands_to_start_pings_stop(in_a_minute):
    classroom = make(in_a_minute, minutes=3, interval=60)
    # The first ping goes one interval after the start, not at it, and none at the end.
    assert timeline(classroom) == [
        ("start_recording", 0),
        ("live_ping", 60),
        ("live_ping", 120),
        ("stop_recording", 180),
    ]


def test_classroom_steps_are_armed_after_commit(recording_engine, in_a_minute):
    classroom = make(in_a_minute, minutes=2, interval=30)
    ids = set(classroom.steps.values_list("pk", flat=True))
    assert {c[1] for c in recording_engine.calls} == ids
    assert classroom.steps.filter(arm_state=ArmState.ARMED).count() == len(ids)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"end_offset": -60}, "end", "must be after the start"),
        ({"end_offset": 0}, "end", "must be after the start"),
        ({"interval": 1}, "live_ping_interval", "at least 5"),
        ({"title": " "}, "title", "must not be empty"),
        ({"ref": ""}, "recording_service_ref", "must not be empty"),
    ],
)
def test_bad_classrooms_are_refused_with_the_field(kwargs, field, text, in_a_minute):
    with pytest.raises(ValidationError) as info:
        services.classroom_create(
            title=kwargs.get("title", "Maths"),
            start=in_a_minute,
            end=in_a_minute + dt.timedelta(seconds=kwargs.get("end_offset", 600)),
            recording_service_ref=kwargs.get("ref", "room"),
            live_ping_interval=kwargs.get("interval", 60),
        )
    assert any(text in m for m in info.value.message_dict[field]), info.value.message_dict
    assert not Classroom.objects.exists() and not Step.objects.exists()


def test_too_many_steps_is_refused(settings, in_a_minute):
    settings.SCHEDULES_MAX_STEPS_PER_CLASSROOM = 10
    with pytest.raises(ValidationError) as info:
        make(in_a_minute, minutes=60, interval=60)
    assert "the limit is 10" in info.value.message_dict["live_ping_interval"][0]


def test_a_class_of_years_with_five_second_pings_is_refused_without_being_expanded(in_a_minute):
    # 5 years at 5 s would be ~32 million steps: counted, never built.
    with pytest.raises(ValidationError) as info:
        make(in_a_minute, minutes=5 * 365 * 24 * 60, interval=5)
    assert "gives 31536001 steps" in info.value.message_dict["live_ping_interval"][0]


@pytest.mark.parametrize(
    ("seconds", "interval"),
    [(1, 60), (60, 60), (61, 60), (119.5, 60), (3600, 7), (3600.000001, 1), (0.5, 1)],
)
def test_step_count_matches_the_timeline(now, seconds, interval):
    end = now + dt.timedelta(seconds=seconds)
    counted = services.classroom_step_count(now, end, interval)
    assert counted == len(services.classroom_timeline(now, end, interval))


def test_moving_the_end_replans_only_future_steps(recording_engine, in_a_minute):
    classroom = make(in_a_minute, minutes=3, interval=60)
    stop = classroom.steps.get(action="stop_recording")
    services.classroom_update(classroom=classroom, end=in_a_minute + dt.timedelta(minutes=2))
    assert timeline(classroom) == [
        ("start_recording", 0),
        ("live_ping", 60),
        ("stop_recording", 120),
    ]
    stop.refresh_from_db()
    assert stop.version == 2  # re-fenced, re-armed
    assert ("arm", stop.pk, 2) in recording_engine.calls
    dropped = classroom.steps.get(state=StepState.CANCELLED)
    assert dropped.action == "live_ping" and dropped.version == 2
    services.classroom_update(classroom=classroom, end=in_a_minute + dt.timedelta(minutes=4))
    assert [a for a, _ in timeline(classroom)].count("live_ping") == 3


def test_steps_that_ran_keep_their_history(now):
    classroom = make(now, minutes=3, interval=60)
    start = classroom.steps.get(action="start_recording")
    run = services.step_execute(step_id=start.pk, version=1)
    assert run.status == RunStatus.SUCCEEDED
    classroom.refresh_from_db()
    assert classroom.status == PlanStatus.RUNNING
    services.classroom_update(classroom=classroom, live_ping_interval=30)
    start.refresh_from_db()
    assert start.state == StepState.SUCCEEDED and start.version == 1
    assert start.runs.count() == 1
    assert [a for a, _ in timeline(classroom)].count("live_ping") == 5


def test_cancel_before_start_cancels_everything(recording_engine, in_a_minute):
    classroom = make(in_a_minute, minutes=2, interval=60)
    services.classroom_cancel(classroom=classroom)
    assert set(classroom.steps.values_list("state", flat=True)) == {StepState.CANCELLED}
    assert all(s.arm_state == ArmState.DISARMED for s in classroom.steps.all())
    with pytest.raises(ValidationError):
        services.classroom_update(classroom=classroom, title="Physics")


def test_cancel_while_live_stops_the_recording_now(now):
    classroom = make(now, minutes=10, interval=60)
    start = classroom.steps.get(action="start_recording")
    services.step_execute(step_id=start.pk, version=1)
    services.classroom_cancel(classroom=classroom)
    stop = classroom.steps.get(action="stop_recording")
    assert stop.state == StepState.SCHEDULED and stop.due_at <= timezone.now()
    assert (
        not classroom.steps.filter(action="live_ping").exclude(state=StepState.CANCELLED).exists()
    )
    run = services.step_execute(step_id=stop.pk, version=stop.version)
    assert run.status == RunStatus.SUCCEEDED
    classroom.refresh_from_db()
    assert classroom.status == PlanStatus.CANCELLED


def test_shift_moves_start_and_end_before_the_class(in_a_minute):
    classroom = make(in_a_minute, minutes=2, interval=60)
    moved = services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=30))
    assert moved.start == in_a_minute + dt.timedelta(minutes=30)
    assert moved.end == in_a_minute + dt.timedelta(minutes=32)
    assert timeline(moved) == [("start_recording", 0), ("live_ping", 60), ("stop_recording", 120)]


def test_shift_of_a_live_class_moves_only_its_end(now):
    classroom = make(now, minutes=2, interval=60)
    start = classroom.steps.get(action="start_recording")
    services.step_execute(step_id=start.pk, version=1)
    moved = services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=1))
    assert moved.start == now and moved.end == now + dt.timedelta(minutes=3)
    start.refresh_from_db()
    assert start.state == StepState.SUCCEEDED and start.version == 1
