"""Pause and resume (issue 19): what a pause holds, what a running step does meanwhile,
how resuming re-plans by the missed policy, and a job that pauses itself after failures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from schedules import services
from schedules.models import (
    ArmState,
    Classroom,
    Job,
    PlanStatus,
    Run,
    RunStatus,
    Step,
    StepState,
)
from tests.schedules.test_lock_order import recorder  # noqa: F401 - a fixture
from workers.actions import NotDone, PermanentError, TransientError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

MINUTE = dt.timedelta(minutes=1)
OUTCOMES: list[Any] = []
PENDING = (StepState.SCHEDULED, StepState.QUEUED)


@pytest.fixture
def start() -> dt.datetime:
    """A whole minute, an hour ahead."""
    return (timezone.now() + dt.timedelta(hours=1)).replace(second=0, microsecond=0)


@pytest.fixture
def scripted() -> Iterator[list[Any]]:
    """An action ``scripted`` that takes its queued outcomes in turn (an exception is
    raised, a callable is called mid-run); with none left it succeeds."""

    @register("scripted", payload=NoopPayload, description="test")
    def scripted_action(ctx: Any, payload: Any) -> dict[str, Any]:
        outcome = OUTCOMES.pop(0) if OUTCOMES else None
        if isinstance(outcome, Exception):
            raise outcome
        if callable(outcome):
            outcome()
        return {"step": ctx.step_id}

    OUTCOMES.clear()
    yield OUTCOMES
    REGISTRY.pop("scripted")


def every_minute(start: dt.datetime, **kw: Any) -> Job:
    options = {"action": "noop", "rate_every": 1, "rate_unit": "minutes", **kw}
    return services.job_schedule(schedule_type="rate", starts_at=start, **options)


def pending(job: Job) -> list[Step]:
    return list(job.steps.filter(state__in=PENDING).order_by("pk"))


def held(job: Job | Classroom) -> list[Step]:
    return list(job.steps.filter(state=StepState.PAUSED).order_by("pk"))


def deliver(step: Step, when: dt.datetime | None = None) -> Run:
    """Deliver the step's current version at ``when`` (default: its due time)."""
    step.refresh_from_db()
    with time_machine.travel(when or step.due_at, tick=False):
        run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


def fresh(obj: Job | Classroom) -> Any:
    obj.refresh_from_db()
    return obj


# --- A one-off job ----------------------------------------------------------------------------


def test_pausing_holds_the_pending_step_and_disarms_its_timer(recording_engine, in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    (step,) = pending(job)

    services.job_pause(job=job, reason="waiting for the new template")

    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and job.pause_reason == "waiting for the new template"
    assert job.paused_at is not None
    step.refresh_from_db()
    assert step.state == StepState.PAUSED and step.version == 2
    assert step.arm_state == ArmState.DISARMED and step.due_at == in_a_minute
    # Disarmed after the commit, on the engine that held it; nothing armed instead.
    assert recording_engine.calls == [("arm", step.pk, 1), ("disarm", step.pk, 1)]
    # The message already on its way is skipped: the step is at another version.
    run = services.step_execute(step_id=step.pk, version=1)
    assert run is not None and run.status == RunStatus.SKIPPED and "stale message" in run.note


def test_pausing_a_paused_job_and_resuming_a_scheduled_one_change_nothing(in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    services.job_resume(job=job)  # not paused: nothing to resume
    assert fresh(job).status == PlanStatus.SCHEDULED and pending(job)[0].version == 1
    services.job_pause(job=job, reason="first")
    before = fresh(job).paused_at
    services.job_pause(job=job, reason="second")
    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and job.pause_reason == "first"
    assert job.paused_at == before and held(job)[0].version == 2


def test_resuming_before_the_due_time_arms_the_step_again_at_that_time(
    recording_engine, in_a_minute
):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    services.job_pause(job=job)
    services.job_resume(job=job)
    job = fresh(job)
    (step,) = pending(job)
    assert job.status == PlanStatus.SCHEDULED and job.paused_at is None and job.pause_reason == ""
    assert step.due_at == job.due_at == in_a_minute and step.version == 3
    assert recording_engine.calls[-1] == ("arm", step.pk, 3)
    assert deliver(step).status == RunStatus.SUCCEEDED


def test_a_one_off_job_paused_past_its_due_time_runs_at_resume(in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    services.job_pause(job=job)
    resumed_at = in_a_minute + dt.timedelta(minutes=30)
    with time_machine.travel(resumed_at, tick=False):
        services.job_resume(job=job)
    (step,) = pending(job)
    assert step.due_at == fresh(job).due_at == resumed_at
    run = deliver(step)
    assert run.status == RunStatus.SUCCEEDED and run.lateness == dt.timedelta(0)
    assert fresh(job).status == PlanStatus.SUCCEEDED


@pytest.mark.parametrize("ending", ["cancelled", "succeeded", "failed"])
def test_an_ended_job_can_be_neither_paused_nor_resumed(ending, in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    if ending == "cancelled":
        services.job_cancel(job=job)
    else:
        Job.objects.filter(pk=job.pk).update(status=ending)
    ended = "" if ending == "cancelled" else ": it has ended"
    for service, verb in ((services.job_pause, "paused"), (services.job_resume, "resumed")):
        with pytest.raises(ValidationError) as info:
            service(job=job)
        assert info.value.message_dict == {"status": [f"a {ending} job cannot be {verb}{ended}"]}


def test_a_reason_too_long_is_refused_naming_the_field(in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    with pytest.raises(ValidationError) as info:
        services.job_pause(job=job, reason="x" * 501)
    assert info.value.message_dict == {"reason": ["is 501 characters; the limit is 500"]}
    assert fresh(job).status == PlanStatus.SCHEDULED


def test_a_paused_job_can_be_edited_rescheduled_and_cancelled_but_not_run_now(in_a_minute):
    job = services.job_schedule(action="noop", due_at=in_a_minute)
    services.job_pause(job=job)
    services.job_update(job=job, payload={"note": "fixed"}, max_attempts=5, precision="relaxed")
    later = in_a_minute + dt.timedelta(hours=1)
    services.job_reschedule(job=job, due_at=later)
    (step,) = held(job)
    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and job.payload == {"note": "fixed"}
    assert (step.due_at, step.max_attempts, step.precision) == (later, 5, "relaxed")
    assert pending(job) == []  # still held: nothing armed
    with pytest.raises(ValidationError) as info:
        services.job_run_now(job=job)
    assert info.value.message_dict == {
        "status": ["the job is paused: resume it first (it then runs by its schedule)"]
    }
    services.job_cancel(job=job)
    step.refresh_from_db()
    assert fresh(job).status == PlanStatus.CANCELLED and step.state == StepState.CANCELLED


# --- A step already running finishes (the race) ------------------------------------------------


def test_a_recurring_job_paused_while_its_step_runs_records_it_and_plans_nothing(
    recording_engine, scripted, start
):
    job = every_minute(start, action="scripted")
    (step,) = pending(job)
    scripted.append(lambda: services.job_pause(job=job, reason="mid-run"))

    run = deliver(step)

    assert run.status == RunStatus.SUCCEEDED  # the running attempt was not interrupted
    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and job.pause_reason == "mid-run"  # still paused
    assert job.run_count == 1
    assert pending(job) == [] and held(job) == []  # no next occurrence planned
    assert [c for c in recording_engine.calls if c[0] == "arm"] == [("arm", step.pk, 1)]
    # Resumed before the next occurrence: only that one is armed.
    with time_machine.travel(start + dt.timedelta(seconds=10), tick=False):
        services.job_resume(job=job)
    (nxt,) = pending(job)
    assert nxt.due_at == start + MINUTE and fresh(job).status == PlanStatus.SCHEDULED
    assert recording_engine.calls[-1] == ("arm", nxt.pk, 1)


def test_a_one_off_job_paused_while_it_runs_holds_its_retry(recording_engine, scripted, now):
    job = services.job_schedule(action="scripted", due_at=now, max_attempts=3)
    (step,) = pending(job)

    def pause_then_fail() -> None:
        services.job_pause(job=job)
        raise TransientError("timeout")

    scripted.append(pause_then_fail)
    run = deliver(step)
    assert run.status == RunStatus.RETRYING and "the retry is held" in run.note
    step.refresh_from_db()
    assert step.state == StepState.PAUSED and step.version == 2
    assert fresh(job).status == PlanStatus.PAUSED
    assert [c for c in recording_engine.calls if c[0] == "arm"] == [("arm", step.pk, 1)]
    services.job_resume(job=job)
    step.refresh_from_db()
    assert step.state == StepState.SCHEDULED and recording_engine.calls[-1][0] == "arm"
    assert deliver(step).status == RunStatus.SUCCEEDED
    assert fresh(job).status == PlanStatus.SUCCEEDED


def test_a_one_off_job_whose_running_attempt_succeeds_while_paused_ends(scripted, now):
    job = services.job_schedule(action="scripted", due_at=now)
    scripted.append(lambda: services.job_pause(job=job))
    assert deliver(pending(job)[0]).status == RunStatus.SUCCEEDED
    assert fresh(job).status == PlanStatus.SUCCEEDED  # nothing left to hold


@pytest.fixture
def polling() -> Iterator[list[Any]]:
    """An action ``pollable`` that is never done; a queued callable is called mid-check."""

    @register("pollable", payload=NoopPayload, description="test", polls=True)
    def pollable(ctx: Any, payload: Any) -> NotDone:
        outcome = OUTCOMES.pop(0) if OUTCOMES else None
        if callable(outcome):
            outcome()
        return NotDone(result={"check": ctx.step_id})

    OUTCOMES.clear()
    yield OUTCOMES
    REGISTRY.pop("pollable")


def test_a_polling_job_paused_mid_check_holds_its_next_check(polling, now):
    job = services.job_schedule(action="pollable", due_at=now, poll_interval=30, poll_max_checks=5)
    services.job_pause(job=job)  # before its first check
    (first,) = held(job)
    services.job_resume(job=job)
    (first,) = pending(job)
    polling.append(lambda: services.job_pause(job=job))  # paused during the check

    run = deliver(first)

    assert run.status == RunStatus.NOT_DONE and "is held while the job is paused" in run.note
    (check,) = held(job)
    assert check.poll_number == 1 and pending(job) == []
    assert fresh(job).status == PlanStatus.PAUSED
    services.job_resume(job=job)
    (check,) = pending(job)
    assert check.poll_number == 1 and fresh(job).status == PlanStatus.SCHEDULED


# --- Resuming a recurring job: by its missed policy ---------------------------------------------


def test_resuming_before_the_held_occurrence_arms_that_occurrence(recording_engine, start):
    job = every_minute(start)
    (step,) = pending(job)
    services.job_pause(job=job)
    services.job_resume(job=job)
    (again,) = pending(job)
    assert again.pk == step.pk and again.due_at == start and again.version == 3
    assert recording_engine.calls == [
        ("arm", step.pk, 1),
        ("disarm", step.pk, 1),
        ("arm", step.pk, 3),
    ]


def paused_across_occurrences(start: dt.datetime, policy: str) -> tuple[Job, dt.datetime]:
    """A job every minute from ``start``: its first occurrence runs, then it is paused
    until 3.5 minutes past its second (the occurrences at +1, +2, +3 and +4 are missed)."""
    job = every_minute(start, missed_policy=policy)
    assert deliver(pending(job)[0]).status == RunStatus.SUCCEEDED
    with time_machine.travel(start + dt.timedelta(seconds=10), tick=False):
        services.job_pause(job=job)
    resumed_at = start + MINUTE + dt.timedelta(minutes=3, seconds=30)
    with time_machine.travel(resumed_at, tick=False):
        services.job_resume(job=job)
    return fresh(job), resumed_at


def test_resume_with_run_once_runs_once_for_all_missed_then_follows_the_rule(start):
    job, resumed_at = paused_across_occurrences(start, "run_once")
    (step,) = pending(job)  # only the next occurrence is armed: the held one, due at +1
    assert step.due_at == start + MINUTE and job.status == PlanStatus.SCHEDULED
    run = deliver(step, resumed_at)
    assert run.status == RunStatus.SUCCEEDED
    assert "3 later occurrences already due" in run.note and "ran once" in run.note
    (nxt,) = pending(job)
    assert nxt.due_at == start + 5 * MINUTE  # the first occurrence after now
    assert fresh(job).run_count == 2


def test_resume_with_run_all_runs_every_missed_occurrence_in_turn(start):
    job, resumed_at = paused_across_occurrences(start, "run_all")
    ran = []
    while (step := pending(job)[0]).due_at <= resumed_at:
        assert len(pending(job)) == 1  # one at a time
        ran.append(deliver(step, resumed_at).due_at)
    assert ran == [start + k * MINUTE for k in (1, 2, 3, 4)]
    assert pending(job)[0].due_at == start + 5 * MINUTE
    assert fresh(job).run_count == 5


def test_resume_with_skip_runs_none_of_the_missed_and_arms_the_next(recording_engine, start):
    job, _ = paused_across_occurrences(start, "skip")
    (step,) = pending(job)
    assert step.due_at == job.due_at == start + 5 * MINUTE
    # The held occurrence was passed over: cancelled, never run.
    skipped = job.steps.get(sequence=1)
    assert skipped.state == StepState.CANCELLED and not skipped.runs.exists()
    assert recording_engine.calls[-1] == ("arm", step.pk, 1)
    assert Run.objects.filter(job=job).count() == 1


@pytest.mark.parametrize("policy", ["run_once", "run_all", "skip"])
def test_resume_after_the_occurrence_ran_while_paused_plans_by_the_policy(policy, scripted, start):
    """Nothing is held (the occurrence was running at the pause): resume plans the one
    after it, by the policy, from the last occurrence's time."""
    job = every_minute(start, action="scripted", missed_policy=policy)
    scripted.append(lambda: services.job_pause(job=job))
    deliver(pending(job)[0])
    assert held(fresh(job)) == [] and pending(job) == []
    resumed_at = start + dt.timedelta(minutes=2, seconds=30)  # +1 and +2 missed
    with time_machine.travel(resumed_at, tick=False):
        services.job_resume(job=job)
    (step,) = pending(job)
    expected = start + (3 if policy == "skip" else 1) * MINUTE
    assert step.due_at == expected and step.sequence == 1


def test_a_paused_job_whose_rule_changes_keeps_its_new_next_occurrence_held(start):
    job = every_minute(start)
    services.job_pause(job=job)
    services.job_update(job=job, rate_every=5, starts_at=start + MINUTE)
    (step,) = held(job)
    assert step.due_at == start + MINUTE and pending(job) == []
    assert fresh(job).status == PlanStatus.PAUSED
    services.job_resume(job=job)
    assert pending(job)[0].pk == step.pk


# --- A job that pauses itself after failures ------------------------------------------------------


def test_a_job_pauses_itself_after_n_failures_in_a_row(recording_engine, scripted, start):
    job = every_minute(start, action="scripted", pause_after_failures=3, max_attempts=1)
    scripted.extend([PermanentError("bad"), PermanentError("bad"), None])
    scripted.extend([PermanentError("no"), PermanentError("no"), PermanentError("host down")])
    statuses = []
    for _ in range(6):
        deliver(pending(job)[0])
        job = fresh(job)
        statuses.append((job.consecutive_failures, job.status))
    # A success starts the count again; the third failure in a row pauses the job.
    assert statuses == [
        (1, PlanStatus.SCHEDULED),
        (2, PlanStatus.SCHEDULED),
        (0, PlanStatus.SCHEDULED),
        (1, PlanStatus.SCHEDULED),
        (2, PlanStatus.SCHEDULED),
        (3, PlanStatus.PAUSED),
    ]
    assert job.pause_reason == "paused after 3 consecutive failures: PermanentError: host down"
    assert job.paused_at is not None and pending(job) == [] and held(job) == []
    armed = [c for c in recording_engine.calls if c[0] == "arm"]
    assert len(armed) == 6  # the first occurrence and one after each but the last
    services.job_resume(job=job)
    job = fresh(job)
    assert job.consecutive_failures == 0 and job.status == PlanStatus.SCHEDULED
    assert len(pending(job)) == 1


def test_a_job_with_overlap_allow_that_pauses_itself_holds_its_planned_next(scripted, start):
    job = every_minute(
        start, action="scripted", pause_after_failures=1, overlap_policy="allow", max_attempts=1
    )
    scripted.append(PermanentError("down"))
    deliver(pending(job)[0])  # its claim planned the next occurrence already
    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and pending(job) == []
    (nxt,) = held(job)
    assert nxt.due_at == start + MINUTE and nxt.version == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pause_after_failures": 0}, "must be a whole number from 1 to"),
        ({"pause_after_failures": -2}, "must be a whole number from 1 to"),
        (
            {"pause_after_failures": 3, "schedule_type": "once"},
            "applies to a recurring job only (a one-off job ends when it fails)",
        ),
    ],
)
def test_pause_after_failures_is_checked(kwargs, message, start):
    if kwargs.get("schedule_type") == "once":
        call = {"action": "noop", "due_at": start, **kwargs}
    else:
        call = {"action": "noop", "schedule_type": "rate", "rate_every": 1, "rate_unit": "hours"}
        call.update(kwargs)
    with pytest.raises(ValidationError) as info:
        services.job_schedule(**call)
    (text,) = info.value.message_dict["pause_after_failures"]
    assert message in text
    job = every_minute(start)
    services.job_update(job=job, pause_after_failures=2)
    assert fresh(job).pause_after_failures == 2


# --- Classrooms -------------------------------------------------------------------------------


def classroom(start: dt.datetime, minutes: int = 5) -> Classroom:
    return services.classroom_create(
        title="Maths",
        start=start,
        end=start + dt.timedelta(minutes=minutes),
        recording_service_ref="room-42",
        live_ping_interval=60,
    )


def states(c: Classroom) -> list[tuple[str, int, str, dt.datetime]]:
    return list(
        c.steps.order_by("due_at", "pk").values_list("action", "sequence", "state", "due_at")
    )


def test_pausing_a_classroom_holds_its_steps_and_resuming_arms_them(recording_engine, start):
    c = classroom(start)
    ids = sorted(c.steps.values_list("pk", flat=True))
    services.classroom_pause(classroom=c, reason="room flooded")
    c = fresh(c)
    assert c.status == PlanStatus.PAUSED and c.pause_reason == "room flooded"
    assert [s.pk for s in held(c)] == ids
    assert sorted(pk for op, pk, _ in recording_engine.calls if op == "disarm") == ids
    services.classroom_resume(classroom=c)
    c = fresh(c)
    assert c.status == PlanStatus.SCHEDULED and c.paused_at is None
    assert held(c) == [] and c.steps.filter(state=StepState.SCHEDULED).count() == len(ids)
    assert sorted(pk for op, pk, v in recording_engine.calls if op == "arm" and v == 3) == ids


def test_a_live_classroom_resumed_drops_past_pings_and_keeps_the_stop(start):
    c = classroom(start)
    with time_machine.travel(start, tick=False):
        deliver(c.steps.get(action="start_recording"))
        services.classroom_pause(classroom=c)
    assert fresh(c).status == PlanStatus.PAUSED  # its start's record did not un-pause it
    with time_machine.travel(start + dt.timedelta(minutes=2, seconds=30), tick=False):
        services.classroom_resume(classroom=c)
    assert fresh(c).status == PlanStatus.RUNNING
    assert [(a, n, st) for a, n, st, _ in states(c)] == [
        ("start_recording", 0, StepState.SUCCEEDED),
        ("live_ping", 1, StepState.CANCELLED),
        ("live_ping", 2, StepState.CANCELLED),
        ("live_ping", 3, StepState.SCHEDULED),
        ("live_ping", 4, StepState.SCHEDULED),
        ("stop_recording", 0, StepState.SCHEDULED),
    ]
    assert c.steps.get(action="stop_recording").due_at == c.end


def test_a_classroom_paused_past_its_start_starts_recording_at_resume(start):
    c = classroom(start)
    services.classroom_pause(classroom=c)
    resumed_at = start + dt.timedelta(minutes=1, seconds=30)
    with time_machine.travel(resumed_at, tick=False):
        services.classroom_resume(classroom=c)
    assert fresh(c).status == PlanStatus.SCHEDULED
    got = {(a, n): (st, due) for a, n, st, due in states(c)}
    assert got[("start_recording", 0)] == (StepState.SCHEDULED, resumed_at)
    assert got[("live_ping", 1)][0] == StepState.CANCELLED
    assert got[("live_ping", 2)] == (StepState.SCHEDULED, start + 2 * MINUTE)
    assert got[("stop_recording", 0)] == (StepState.SCHEDULED, c.end)


def test_a_recording_classroom_paused_past_its_end_is_stopped_at_resume(start):
    c = classroom(start)
    with time_machine.travel(start, tick=False):
        deliver(c.steps.get(action="start_recording"))
        services.classroom_pause(classroom=c)
    resumed_at = c.end + MINUTE
    with time_machine.travel(resumed_at, tick=False):
        services.classroom_resume(classroom=c)
    stop = c.steps.get(action="stop_recording")
    assert stop.state == StepState.SCHEDULED and stop.due_at == resumed_at
    assert not c.steps.filter(action="live_ping", state=StepState.SCHEDULED).exists()
    assert deliver(stop).status == RunStatus.SUCCEEDED
    assert fresh(c).status == PlanStatus.SUCCEEDED


def test_a_classroom_that_ended_while_paused_before_it_started_is_cancelled(start):
    c = classroom(start)
    services.classroom_pause(classroom=c)
    with time_machine.travel(c.end + MINUTE, tick=False):
        services.classroom_resume(classroom=c)
    assert fresh(c).status == PlanStatus.CANCELLED
    assert set(c.steps.values_list("state", flat=True)) == {StepState.CANCELLED}


def test_a_paused_classroom_cannot_change_but_can_be_cancelled(start):
    c = classroom(start)
    services.classroom_pause(classroom=c)
    with pytest.raises(ValidationError) as info:
        services.classroom_update(classroom=c, title="Physics")
    assert info.value.message_dict == {
        "status": ["the classroom is paused: resume it first, then change it"]
    }
    services.classroom_cancel(classroom=c)
    assert fresh(c).status == PlanStatus.CANCELLED
    assert set(c.steps.values_list("state", flat=True)) == {StepState.CANCELLED}
    with pytest.raises(ValidationError) as info:
        services.classroom_pause(classroom=c)
    assert info.value.message_dict == {"status": ["a cancelled classroom cannot be paused"]}


def test_a_classroom_retry_while_paused_is_held(start, monkeypatch):
    c = classroom(start)
    with time_machine.travel(start, tick=False):
        deliver(c.steps.get(action="start_recording"))
    ping = c.steps.get(action="live_ping", sequence=1)

    def fail(*args: Any, **kwargs: Any) -> Any:
        services.classroom_pause(classroom=c)
        raise TransientError("service unavailable")

    monkeypatch.setattr("workers.backends.recording.LoggingRecordingBackend.call", fail)
    run = deliver(ping)
    assert run.status == RunStatus.RETRYING and "held while the classroom is paused" in run.note
    ping.refresh_from_db()
    assert ping.state == StepState.PAUSED


# --- Workflows: pausing a workflow pauses its rule --------------------------------------------


def test_pausing_a_workflow_pauses_the_rule_that_starts_it():
    workflow = services.workflow_create(
        name="nightly",
        definition={"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}},
    )
    with pytest.raises(ValidationError) as info:
        services.workflow_pause(workflow=workflow)
    assert info.value.message_dict == {
        "schedule": ["the workflow has no rule to pause: set one first (schedule_workflow)"]
    }
    job = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours"
    )
    services.workflow_pause(workflow=workflow, reason="maintenance")
    job = fresh(job)
    assert job.status == PlanStatus.PAUSED and job.pause_reason == "maintenance"
    services.workflow_resume(workflow=workflow)
    assert fresh(job).status == PlanStatus.SCHEDULED and len(pending(job)) == 1
    services.job_cancel(job=job)
    with pytest.raises(ValidationError) as info:
        services.workflow_resume(workflow=workflow)
    assert info.value.message_dict == {
        "schedule": [f"its rule (job {job.pk}): a cancelled job cannot be resumed"]
    }


# --- The lock order ---------------------------------------------------------------------------


def test_pause_and_resume_lock_the_owner_then_steps_in_ascending_id(recorder, start):  # noqa: F811
    job = every_minute(start, overlap_policy="allow")
    services.job_pause(job=job)
    services.job_update(job=job, rate_every=2)
    services.job_resume(job=job)
    c = classroom(start)
    services.classroom_pause(classroom=c)
    services.classroom_resume(classroom=c)
    assert recorder.violations() == []
