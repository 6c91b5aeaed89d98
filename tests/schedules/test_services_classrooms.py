"""Classrooms expand to start, pings and stop; updates re-plan only what has not run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from schedules import services
from schedules.models import ArmState, Classroom, PlanStatus, Run, RunStatus, Step, StepState
from workers.backends.recording import LoggingRecordingBackend

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
    assert stop.version == 2  # the stop's old timer and any message it sent are fenced off
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


# --- Timeline changes of a live class ------------------------------------------------------------


@pytest.fixture
def clock(now: dt.datetime) -> Iterator[time_machine.Coordinates]:
    """The clock, stopped at ``now``; tests move it to walk through a class."""
    with time_machine.travel(now, tick=False) as traveller:
        yield traveller


@pytest.fixture
def backend_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations the (default, logging) recording backend was asked for, in order."""
    calls: list[str] = []
    real_call = LoggingRecordingBackend.call

    def call(self: LoggingRecordingBackend, operation: str, body: dict[str, Any]) -> Any:
        calls.append(operation)
        return real_call(self, operation, body)

    monkeypatch.setattr(LoggingRecordingBackend, "call", call)
    return calls


def step(classroom: Classroom, action: str, sequence: int = 0) -> Step:
    return classroom.steps.exclude(state=StepState.CANCELLED).get(action=action, sequence=sequence)


def run_step(s: Step) -> Run:
    """Deliver a step's current version, the way the worker does."""
    s.refresh_from_db()
    run = services.step_execute(step_id=s.pk, version=s.version)
    assert run is not None
    return run


def go_live(clock: time_machine.Coordinates, classroom: Classroom, seconds: float) -> None:
    """Walk the clock through a class: start the recording, then run every ping due by
    ``seconds`` after the start."""
    clock.move_to(classroom.start)
    assert run_step(step(classroom, "start_recording")).status == RunStatus.SUCCEEDED
    clock.move_to(classroom.start + dt.timedelta(seconds=seconds))
    due = classroom.steps.filter(
        action="live_ping", state=StepState.SCHEDULED, due_at__lte=timezone.now()
    )
    for ping in due.order_by("due_at"):
        assert run_step(ping).status == RunStatus.SUCCEEDED


def pending_pings(classroom: Classroom) -> list[float]:
    """Seconds after the start of each ping still to run."""
    pings = classroom.steps.filter(
        action="live_ping", state__in=[StepState.SCHEDULED, StepState.QUEUED]
    )
    return [(p.due_at - classroom.start).total_seconds() for p in pings.order_by("due_at")]


def snapshot(classroom: Classroom) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Everything stored about a classroom and its steps, to compare before and after."""
    row = Classroom.objects.filter(pk=classroom.pk).values().get()
    steps = classroom.steps.order_by("pk").values_list(
        "pk", "action", "sequence", "state", "version", "due_at", "queued_at", "attempts"
    )
    return row, list(steps)


def test_a_shorter_ping_interval_on_a_live_class_does_not_fire_the_pings_now_past(
    clock, recording_engine, in_a_minute
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=150)  # pings at 60 and 120 ran
    ran = list(classroom.steps.filter(state=StepState.SUCCEEDED).order_by("pk"))
    old_third = step(classroom, "live_ping", 3)  # planned at 180, would move to 90 (past)

    services.classroom_update(classroom=classroom, live_ping_interval=30)

    # Only pings after now: 180, 210, ... up to 570; none at 90, 120 or 150.
    assert pending_pings(classroom) == [float(t) for t in range(180, 600, 30)]
    assert not classroom.steps.filter(
        state__in=[StepState.SCHEDULED, StepState.QUEUED], due_at__lte=timezone.now()
    ).exists()
    old_third.refresh_from_db()
    assert old_third.state == StepState.CANCELLED and old_third.version == 2
    # The message its old timer may already have sent is skipped, never run.
    assert services.step_execute(step_id=old_third.pk, version=1).status == RunStatus.SKIPPED
    for before in ran:  # the start and the two pings keep their state, version and run
        after = Step.objects.get(pk=before.pk)
        assert (after.state, after.version, after.due_at) == (
            StepState.SUCCEEDED,
            1,
            before.due_at,
        )
        assert [r.status for r in after.runs.all()] == [RunStatus.SUCCEEDED]


def test_a_queued_ping_whose_new_time_is_past_is_cancelled_and_its_message_skipped(
    clock, in_a_minute
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=60)  # the ping at 60 ran
    clock.move_to(classroom.start + dt.timedelta(seconds=121))
    second = step(classroom, "live_ping", 2)  # due at 120: released, not yet run
    Step.objects.filter(pk=second.pk).update(state=StepState.QUEUED, queued_at=timezone.now())

    services.classroom_update(classroom=classroom, live_ping_interval=45)  # 2nd ping: 90

    second.refresh_from_db()
    assert second.state == StepState.CANCELLED and second.version == 2
    run = services.step_execute(step_id=second.pk, version=1)
    assert run.status == RunStatus.SKIPPED and "version 1" in run.note
    assert pending_pings(classroom) == [float(t) for t in range(135, 600, 45)]


def test_a_longer_ping_interval_on_a_live_class_keeps_every_future_ping(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=30)
    go_live(clock, classroom, seconds=100)  # pings 1-3 ran at 30, 60 and 90

    services.classroom_update(classroom=classroom, live_ping_interval=60)

    # Pings 2 and 3 of the new plan (120, 180) are in the future although the steps that
    # held those numbers already ran at 60 and 90: the new ones are planned beside them.
    assert pending_pings(classroom) == [float(t) for t in range(120, 600, 60)]
    ran = classroom.steps.filter(action="live_ping", state=StepState.SUCCEEDED)
    assert sorted((p.due_at - classroom.start).total_seconds() for p in ran) == [30, 60, 90]
    assert all(p.version == 1 and p.runs.count() == 1 for p in ran)
    # A second change re-plans the new pings and leaves the history alone.
    services.classroom_update(classroom=classroom, live_ping_interval=90)
    assert pending_pings(classroom) == [float(t) for t in range(180, 600, 90)]
    assert classroom.steps.filter(action="live_ping", state=StepState.SUCCEEDED).count() == 3


def test_a_ping_retrying_after_a_failure_keeps_its_retry_when_the_end_moves(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=60)
    first = step(classroom, "live_ping", 1)
    retry_at = timezone.now() + dt.timedelta(seconds=4)
    # What the worker leaves after a transient failure: the step rescheduled for its retry.
    Step.objects.filter(pk=first.pk).update(
        state=StepState.SCHEDULED, due_at=retry_at, version=3, attempts=1
    )

    services.classroom_update(classroom=classroom, end=classroom.end + dt.timedelta(minutes=5))

    first.refresh_from_db()
    assert (first.state, first.due_at, first.version) == (StepState.SCHEDULED, retry_at, 3)


@pytest.mark.parametrize("start_state", ["succeeded", "running"])
def test_moving_the_start_of_a_live_class_is_refused_and_nothing_is_written(
    clock, recording_engine, in_a_minute, start_state
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    clock.move_to(classroom.start + dt.timedelta(seconds=5))
    start = step(classroom, "start_recording")
    if start_state == "succeeded":
        assert run_step(start).status == RunStatus.SUCCEEDED
    else:  # a worker has claimed it and is calling the recording service
        Step.objects.filter(pk=start.pk).update(
            state=StepState.RUNNING, lease_until=timezone.now() + dt.timedelta(minutes=5)
        )
    before = snapshot(classroom)
    calls = len(recording_engine.calls)

    with pytest.raises(ValidationError) as info:
        services.classroom_update(
            classroom=classroom,
            start=classroom.start + dt.timedelta(minutes=2),
            end=classroom.end + dt.timedelta(minutes=2),
        )

    (message,) = info.value.message_dict["start"]
    assert "the recording already started at " in message
    assert "a live class can only move its end" in message
    # When the recording really started: its attempt's start (5 s late), or, with no
    # attempt recorded, its due time.
    started = classroom.start + dt.timedelta(seconds=5 if start_state == "succeeded" else 0)
    assert f"started at {started.isoformat(timespec='seconds')};" in message
    assert snapshot(classroom) == before
    assert len(recording_engine.calls) == calls  # nothing armed or disarmed


def test_shift_of_a_class_whose_recording_is_starting_moves_only_its_end(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    clock.move_to(classroom.start)
    start = step(classroom, "start_recording")
    Step.objects.filter(pk=start.pk).update(
        state=StepState.RUNNING, lease_until=timezone.now() + dt.timedelta(minutes=5)
    )

    moved = services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=3))

    assert moved.start == in_a_minute and moved.end == in_a_minute + dt.timedelta(minutes=13)
    start.refresh_from_db()
    assert start.state == StepState.RUNNING and start.version == 1


def test_moving_the_end_of_a_live_class_into_the_grace_stops_it_now(
    clock, backend_calls, in_a_minute
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=150)  # pings at 60 and 120 ran
    new_end = classroom.start + dt.timedelta(seconds=100)  # 50 s ago, within the 60 s grace

    services.classroom_update(classroom=classroom, end=new_end)

    stop = step(classroom, "stop_recording")
    assert stop.due_at == new_end and stop.version == 2
    assert pending_pings(classroom) == []  # pings 3 to 9 are cancelled
    assert classroom.steps.filter(action="live_ping", state=StepState.CANCELLED).count() == 7
    # The ping at 120 ran before the new end was known: it keeps its history.
    assert classroom.steps.filter(action="live_ping", state=StepState.SUCCEEDED).count() == 2
    run = run_step(stop)  # due in the past: runs now, not re-armed for later
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"backend": "logging", "operation": "stop"}
    assert backend_calls.count("stop") == 1
    classroom.refresh_from_db()
    assert classroom.status == PlanStatus.SUCCEEDED


def test_moving_the_end_of_a_live_class_beyond_the_grace_is_refused(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=150)
    before = snapshot(classroom)
    with pytest.raises(ValidationError) as info:
        services.classroom_update(
            classroom=classroom, end=classroom.start + dt.timedelta(seconds=30)
        )
    assert "in the past by more than the 60 s grace" in info.value.message_dict["end"][0]
    assert snapshot(classroom) == before


def test_a_queued_step_that_is_moved_gets_a_new_version_and_its_message_is_skipped(
    in_a_minute,
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    start = step(classroom, "start_recording")
    # The dispatcher released it early (lookahead) and its message is on the queue.
    Step.objects.filter(pk=start.pk).update(state=StepState.QUEUED, queued_at=timezone.now())

    services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=30))

    start.refresh_from_db()
    assert start.state == StepState.SCHEDULED and start.version == 2 and start.queued_at is None
    assert start.due_at == in_a_minute + dt.timedelta(minutes=30)
    run = services.step_execute(step_id=start.pk, version=1)
    assert run.status == RunStatus.SKIPPED and "stale message" in run.note
    start.refresh_from_db()
    assert start.state == StepState.SCHEDULED and start.attempts == 0


def test_a_ping_running_during_an_update_is_left_to_finish(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=60)
    clock.move_to(classroom.start + dt.timedelta(seconds=121))
    second = step(classroom, "live_ping", 2)
    Step.objects.filter(pk=second.pk).update(
        state=StepState.RUNNING, lease_until=timezone.now() + dt.timedelta(minutes=5)
    )

    services.classroom_update(classroom=classroom, end=classroom.start + dt.timedelta(seconds=90))

    second.refresh_from_db()
    assert second.state == StepState.RUNNING and second.version == 1


@pytest.mark.parametrize(
    "change",
    [{"end": dt.timedelta(minutes=5)}, {"live_ping_interval": 30}],
    ids=["end", "live_ping_interval"],
)
def test_a_timeline_change_while_the_recording_stops_is_refused(clock, in_a_minute, change):
    classroom = make(in_a_minute, minutes=2, interval=60)
    go_live(clock, classroom, seconds=120)
    stop = step(classroom, "stop_recording")
    # A worker has claimed the stop and is calling the recording service.
    Step.objects.filter(pk=stop.pk).update(
        state=StepState.RUNNING, lease_until=timezone.now() + dt.timedelta(minutes=5)
    )
    before = snapshot(classroom)
    kwargs = {k: classroom.end + v if k == "end" else v for k, v in change.items()}

    with pytest.raises(ValidationError) as info:
        services.classroom_update(classroom=classroom, **kwargs)

    (field,) = change
    (message,) = info.value.message_dict[field]
    assert "the recording is being stopped" in message
    assert snapshot(classroom) == before


def test_the_recording_reference_of_a_live_class_cannot_change(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    go_live(clock, classroom, seconds=10)
    before = snapshot(classroom)

    with pytest.raises(ValidationError) as info:
        services.classroom_update(classroom=classroom, recording_service_ref="room-43")

    (message,) = info.value.message_dict["recording_service_ref"]
    assert "the recording already started at " in message and "'room-42'" in message
    assert snapshot(classroom) == before
    # The title is not part of the recording: it may still change.
    services.classroom_update(classroom=classroom, title="Maths (live)")
    assert Classroom.objects.get(pk=classroom.pk).title == "Maths (live)"


def test_a_change_to_a_cancelled_classroom_is_refused_and_nothing_is_written(
    recording_engine, in_a_minute
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    services.classroom_cancel(classroom=classroom)
    before = snapshot(classroom)
    calls = len(recording_engine.calls)

    with pytest.raises(ValidationError) as info:
        services.classroom_update(
            classroom=classroom, title="Physics", end=in_a_minute + dt.timedelta(minutes=20)
        )

    assert "the classroom is cancelled; it cannot change" in info.value.message_dict["status"]
    assert snapshot(classroom) == before
    assert len(recording_engine.calls) == calls
    with pytest.raises(ValidationError):
        services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=5))
    assert snapshot(classroom) == before


def test_a_classroom_whose_recording_stopped_cannot_change(clock, in_a_minute):
    classroom = make(in_a_minute, minutes=1, interval=60)
    go_live(clock, classroom, seconds=60)
    assert run_step(step(classroom, "stop_recording")).status == RunStatus.SUCCEEDED
    before = snapshot(classroom)

    with pytest.raises(ValidationError) as info:
        services.classroom_update(classroom=classroom, end=classroom.end + dt.timedelta(hours=1))

    assert "the classroom is succeeded; it cannot change" in info.value.message_dict["status"]
    assert snapshot(classroom) == before


@pytest.mark.parametrize("start_state", ["succeeded", "running"])
def test_cancel_of_a_live_class_stops_the_recording_exactly_once(
    clock, backend_calls, in_a_minute, start_state
):
    classroom = make(in_a_minute, minutes=10, interval=60)
    if start_state == "succeeded":
        go_live(clock, classroom, seconds=90)
    else:  # a worker is starting the recording right now
        clock.move_to(classroom.start)
        Step.objects.filter(pk=step(classroom, "start_recording").pk).update(
            state=StepState.RUNNING, lease_until=timezone.now() + dt.timedelta(minutes=5)
        )
    stop = step(classroom, "stop_recording")

    services.classroom_cancel(classroom=classroom)

    stop.refresh_from_db()
    assert stop.due_at == timezone.now() and stop.version == 2
    assert pending_pings(classroom) == []
    run = run_step(stop)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result == {"backend": "logging", "operation": "stop"}
    # The old timer's message and a duplicate delivery are both skipped.
    assert services.step_execute(step_id=stop.pk, version=1).status == RunStatus.SKIPPED
    assert services.step_execute(step_id=stop.pk, version=2).status == RunStatus.SKIPPED
    assert backend_calls.count("stop") == 1
    assert [r.status for r in stop.runs.order_by("pk")] == [
        RunStatus.SUCCEEDED,
        RunStatus.SKIPPED,
        RunStatus.SKIPPED,
    ]
    classroom.refresh_from_db()
    assert classroom.status == PlanStatus.CANCELLED


def test_cancel_before_the_recording_started_sends_no_stop(clock, backend_calls, in_a_minute):
    classroom = make(in_a_minute, minutes=10, interval=60)
    stop = step(classroom, "stop_recording")

    services.classroom_cancel(classroom=classroom)

    stop.refresh_from_db()
    assert stop.state == StepState.CANCELLED and stop.version == 2
    assert set(classroom.steps.values_list("state", flat=True)) == {StepState.CANCELLED}
    clock.move_to(classroom.end)
    for version in (1, 2):  # the old timer's message, or one for the current version
        run = services.step_execute(step_id=stop.pk, version=version)
        assert run.status == RunStatus.SKIPPED
    assert backend_calls == []


def test_a_class_created_with_its_start_in_the_grace_plans_no_past_pings(clock, now):
    # Started 30 s ago (the grace is 60 s): the recording starts now, the pings at 10, 20
    # and 30 s are not sent all at once after it.
    classroom = make(now - dt.timedelta(seconds=30), minutes=1, interval=10)
    assert pending_pings(classroom) == [40.0, 50.0]
    assert step(classroom, "start_recording").due_at == now - dt.timedelta(seconds=30)
