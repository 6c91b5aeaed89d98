"""Recurring jobs through the services and the worker: one pending occurrence at a time,
bounds, daylight-saving changes, missed runs, overlap, re-planning and bad rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Run, RunStatus, Step, StepState
from workers.actions import register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = ZoneInfo("Europe/Paris")
MINUTE = dt.timedelta(minutes=1)


def every_minute(start: dt.datetime, **kw: Any) -> Job:
    options = {"rate_every": 1, "rate_unit": "minutes", **kw}
    return services.job_schedule(action="noop", schedule_type="rate", starts_at=start, **options)


def pending(job: Job) -> list[Step]:
    return list(job.steps.filter(state__in=[StepState.SCHEDULED, StepState.QUEUED]))


def next_step(job: Job) -> Step:
    (step,) = pending(job)
    return step


def run_at(step: Step, when: dt.datetime | None = None) -> Run:
    """Deliver the step's current version at ``when`` (default: its due time), as the engine
    would, with the clock standing still there."""
    step.refresh_from_db()
    with time_machine.travel(when or step.due_at, tick=False):
        run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


@pytest.fixture
def start() -> dt.datetime:
    """A whole minute, an hour ahead."""
    return (timezone.now() + dt.timedelta(hours=1)).replace(second=0, microsecond=0)


# --- One pending occurrence at a time ---------------------------------------------------------


def test_a_recurring_job_holds_one_pending_step_its_next_occurrence(recording_engine, start):
    job = every_minute(start)
    step = next_step(job)
    assert step.due_at == job.due_at == start and step.recurring and step.sequence == 0
    assert recording_engine.calls == [("arm", step.pk, 1)]
    for k in range(3):
        run = run_at(next_step(job))
        assert run.status == RunStatus.SUCCEEDED
        assert run.due_at == start + k * MINUTE
        job.refresh_from_db()
        # Exactly one timer more per occurrence run: the next one, never a batch.
        assert next_step(job).due_at == job.due_at == start + (k + 1) * MINUTE
    assert [c[0] for c in recording_engine.calls] == ["arm"] * 4
    assert job.run_count == 3 and job.status == PlanStatus.SCHEDULED
    assert list(job.steps.order_by("sequence").values_list("sequence", flat=True)) == [0, 1, 2, 3]


def test_an_occurrence_redelivered_or_retried_plans_its_successor_once(start):
    job = every_minute(start)
    step = next_step(job)
    first = run_at(step)
    again = run_at(step)  # the same message delivered twice
    assert first.status == RunStatus.SUCCEEDED and again.status == RunStatus.SKIPPED
    assert len(pending(job)) == 1
    job.refresh_from_db()
    assert job.run_count == 1


def test_the_job_ends_at_its_end_date(start):
    job = every_minute(start, ends_at=start + 2 * MINUTE + dt.timedelta(seconds=30))
    for _ in range(3):
        assert run_at(next_step(job)).status == RunStatus.SUCCEEDED
    job.refresh_from_db()
    assert pending(job) == []
    assert job.status == PlanStatus.SUCCEEDED and job.run_count == 3
    assert job.due_at == start + 2 * MINUTE  # the last occurrence


def test_the_job_ends_after_max_runs(start):
    job = every_minute(start, max_runs=2)
    run_at(next_step(job))
    run_at(next_step(job))
    job.refresh_from_db()
    assert pending(job) == [] and job.status == PlanStatus.SUCCEEDED and job.run_count == 2


def test_a_failed_last_occurrence_fails_the_job(start, settings):
    @register("always_fails", payload=NoopPayload, description="test")
    def always_fails(ctx: Any, payload: Any) -> None:
        from workers.actions import PermanentError

        raise PermanentError("nope")

    try:
        job = services.job_schedule(
            action="always_fails",
            schedule_type="rate",
            rate_every=1,
            rate_unit="minutes",
            starts_at=start,
            max_runs=2,
        )
        assert run_at(next_step(job)).status == RunStatus.FAILED
        job.refresh_from_db()
        assert job.status == PlanStatus.SCHEDULED  # a failed occurrence; the rule goes on
        assert run_at(next_step(job)).status == RunStatus.FAILED
        job.refresh_from_db()
        assert job.status == PlanStatus.FAILED and pending(job) == []
    finally:
        REGISTRY.pop("always_fails")


# --- Daylight-saving changes in the job's zone -------------------------------------------------


def run_through(job: Job, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        run = run_at(next_step(job))
        assert run.status == RunStatus.SUCCEEDED
        seen.append(run.due_at.astimezone(PARIS).strftime("%m-%d %H:%M %Z"))
    return seen


def test_a_daily_cron_in_paris_runs_once_across_the_spring_change():
    with time_machine.travel(dt.datetime(2026, 3, 27, 12, 0, tzinfo=PARIS), tick=False):
        job = services.job_schedule(
            action="noop", schedule_type="cron", cron="30 2 * * *", time_zone="Europe/Paris"
        )
    # 02:30 does not exist on 29 March: it runs once, right after the jump.
    assert run_through(job, 4) == [
        "03-28 02:30 CET",
        "03-29 03:00 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]


def test_a_daily_cron_in_paris_runs_once_across_the_autumn_change():
    with time_machine.travel(dt.datetime(2026, 10, 24, 12, 0, tzinfo=PARIS), tick=False):
        job = services.job_schedule(
            action="noop", schedule_type="cron", cron="30 2 * * *", time_zone="Europe/Paris"
        )
    # 02:30 happens twice on 25 October: it runs once, at the first pass.
    assert run_through(job, 3) == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]


def test_an_hourly_rate_keeps_real_hours_across_the_autumn_change():
    with time_machine.travel(dt.datetime(2026, 10, 25, 0, 30, tzinfo=PARIS), tick=False):
        job = services.job_schedule(
            action="noop",
            schedule_type="rate",
            rate_every=1,
            rate_unit="hours",
            time_zone="Europe/Paris",
            starts_at=dt.datetime(2026, 10, 25, 1, 0, tzinfo=PARIS),
        )
    assert run_through(job, 4) == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
    ]


# --- Missed runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["run_once", "run_all", "skip"])
def test_missed_occurrences_follow_the_jobs_policy(start, policy):
    """The scheduler was down from before the first occurrence to 3.5 minutes past it."""
    job = every_minute(start, missed_policy=policy)
    back = start + 3 * MINUTE + dt.timedelta(seconds=30)
    first = run_at(next_step(job), back)
    job.refresh_from_db()
    if policy == "skip":
        assert first.status == RunStatus.SKIPPED
        assert "3 later occurrences already due when taken; skipped" in first.note
        assert job.run_count == 0
        assert next_step(job).due_at == start + 4 * MINUTE
        assert job.steps.get(sequence=0).state == StepState.CANCELLED
    elif policy == "run_once":
        assert first.status == RunStatus.SUCCEEDED
        assert "ran once for all of them (missed runs: run once)" in first.note
        assert job.run_count == 1
        assert next_step(job).due_at == start + 4 * MINUTE
    else:
        assert first.status == RunStatus.SUCCEEDED and "each runs in turn" in first.note
        caught_up = [first] + [run_at(next_step(job), back) for _ in range(3)]
        assert [r.due_at for r in caught_up] == [start + k * MINUTE for k in range(4)]
        assert all(r.status == RunStatus.SUCCEEDED for r in caught_up)
        job.refresh_from_db()
        assert job.run_count == 4
        assert next_step(job).due_at == start + 4 * MINUTE
    assert job.status == PlanStatus.SCHEDULED


def test_a_late_run_before_the_next_occurrence_is_not_missed(start):
    job = every_minute(start, missed_policy="skip")
    run = run_at(next_step(job), start + dt.timedelta(seconds=50))
    assert run.status == RunStatus.SUCCEEDED and run.note == ""
    assert next_step(job).due_at == start + MINUTE


# --- Overlap -----------------------------------------------------------------------------------

CLOCK: list[Any] = []  # the running test's time_machine coordinates
SEEN: list[dict[str, Any]] = []


@pytest.fixture
def slow_action() -> Iterator[list[dict[str, Any]]]:
    """An action that "runs" 2.5 minutes (it moves the clock on). While the first call
    runs, an occurrence already planned is delivered at its due time, as an engine would."""

    @register("slow", payload=NoopPayload, description="test")
    def slow(ctx: Any, payload: Any) -> dict[str, Any]:
        job = Job.objects.get(pk=ctx.job_id)
        SEEN.append(
            {
                "due": ctx.due_at,
                "pending": [s.due_at for s in pending(job)],
                "running": list(
                    job.steps.filter(state=StepState.RUNNING).values_list("sequence", flat=True)
                ),
            }
        )
        if len(SEEN) > 1:
            return {}
        began = timezone.now()
        if SEEN[0]["pending"]:
            CLOCK[0].move_to(SEEN[0]["pending"][0])
            nxt = next_step(job)
            services.step_execute(step_id=nxt.pk, version=nxt.version)
        CLOCK[0].move_to(began + 2 * MINUTE + dt.timedelta(seconds=30))
        return {}

    SEEN.clear()
    yield SEEN
    REGISTRY.pop("slow")


def run_slow(job: Job) -> Run:
    step = next_step(job)
    with time_machine.travel(step.due_at, tick=False) as clock:
        CLOCK[:] = [clock]
        run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


def schedule_slow(start: dt.datetime, overlap: str) -> Job:
    return services.job_schedule(
        action="slow",
        schedule_type="rate",
        rate_every=1,
        rate_unit="minutes",
        starts_at=start,
        overlap_policy=overlap,
    )


def test_overlap_skip_passes_over_occurrences_due_while_the_previous_runs(slow_action, start):
    job = schedule_slow(start, "skip")
    run = run_slow(job)
    assert run.status == RunStatus.SUCCEEDED
    # Nothing was planned while it ran, so nothing ran alongside it...
    assert slow_action == [{"due": start, "pending": [], "running": [0]}]
    # ...and the occurrences due at +1 and +2 minutes were passed over.
    assert next_step(job).due_at == start + 3 * MINUTE
    assert Run.objects.filter(job=job).count() == 1


def test_overlap_allow_runs_the_next_occurrence_alongside(slow_action, start):
    job = schedule_slow(start, "allow")
    run = run_slow(job)
    assert run.status == RunStatus.SUCCEEDED
    first, second = slow_action
    assert first == {"due": start, "pending": [start + MINUTE], "running": [0]}
    # The second occurrence ran, on time, while the first was still running.
    assert second["due"] == start + MINUTE and second["running"] == [0, 1]
    runs = Run.objects.filter(job=job).order_by("due_at")
    assert [(r.due_at, r.status) for r in runs] == [
        (start, RunStatus.SUCCEEDED),
        (start + MINUTE, RunStatus.SUCCEEDED),
    ]
    assert next_step(job).due_at == start + 2 * MINUTE  # planned once, by the second
    job.refresh_from_db()
    assert job.run_count == 2


# --- Changes through the services --------------------------------------------------------------


def test_a_new_rule_replans_the_next_occurrence_and_keeps_history(recording_engine, start):
    job = every_minute(start)
    run_at(next_step(job))
    old = next_step(job)
    services.job_update(job=job, rate_every=5)
    old.refresh_from_db()
    assert old.state == StepState.CANCELLED and old.version == 2
    assert ("disarm", old.pk, 1) in recording_engine.calls
    new = next_step(job)
    # The rate counts from its start: the first 5-minute mark after now.
    assert new.due_at == start and new.sequence == 2
    assert Run.objects.filter(job=job, status=RunStatus.SUCCEEDED).count() == 1
    job.refresh_from_db()
    assert job.rate_every == 5 and job.due_at == new.due_at


def test_a_cron_rule_can_replace_a_rate(start):
    job = every_minute(start)
    services.job_update(
        job=job, schedule_type="cron", rate_every=None, rate_unit="", cron="0 9 * * *"
    )
    job.refresh_from_db()
    assert job.schedule_type == "cron" and next_step(job).due_at.astimezone(dt.UTC).hour == 9


def test_a_recurring_job_is_not_rescheduled_but_runs_now_and_keeps_its_rule(start):
    job = every_minute(start)
    with pytest.raises(ValidationError) as caught:
        services.job_reschedule(job=job, due_at=start + MINUTE)
    assert "a recurring job's times come from its rule" in caught.value.message_dict["due_at"][0]
    services.job_run_now(job=job)
    now_step = next_step(job)
    assert now_step.due_at < start and now_step.version == 2
    assert run_at(now_step).status == RunStatus.SUCCEEDED
    assert next_step(job).due_at == start  # the planned occurrence still comes


def test_cancel_stops_a_recurring_job(recording_engine, start):
    job = every_minute(start)
    step = next_step(job)
    services.job_cancel(job=job)
    step.refresh_from_db()
    assert step.state == StepState.CANCELLED and pending(job) == []
    assert ("disarm", step.pk, 1) in recording_engine.calls
    assert run_at(step).status == RunStatus.SKIPPED
    assert pending(job) == []


def test_a_cancel_while_an_occurrence_runs_plans_nothing_after_it(start):
    job = every_minute(start)
    step = next_step(job)

    @register("cancels_its_job", payload=NoopPayload, description="test")
    def cancels(ctx: Any, payload: Any) -> None:
        services.job_cancel(job=Job.objects.get(pk=ctx.job_id))

    try:
        Job.objects.filter(pk=job.pk).update(action="cancels_its_job")
        Step.objects.filter(pk=step.pk).update(action="cancels_its_job")
        run = run_at(step)
    finally:
        REGISTRY.pop("cancels_its_job")
    assert "cancelled or rescheduled while it ran" in run.note
    job.refresh_from_db()
    assert job.status == PlanStatus.CANCELLED and pending(job) == []


# --- Bad rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"schedule_type": "cron", "cron": "61 * * * *"}, "cron", "Bad minute"),
        ({"schedule_type": "cron", "cron": "0 9 * *"}, "cron", "must have 5 fields"),
        ({"schedule_type": "cron", "cron": ""}, "cron", "needs a 5-field expression"),
        ({"schedule_type": "rate", "rate_unit": "minutes"}, "rate_every", "a rate rule needs it"),
        ({"schedule_type": "rate", "rate_every": 5}, "rate_unit", "a rate rule needs it"),
        (
            {"schedule_type": "rate", "rate_every": 5, "rate_unit": "weeks"},
            "rate_unit",
            "must be one of seconds, minutes, hours, days",
        ),
        (
            {"schedule_type": "rate", "rate_every": 0, "rate_unit": "minutes"},
            "rate_every",
            "a whole number from 1 to 2147483647",
        ),
        (
            {"schedule_type": "rate", "rate_every": 10**6, "rate_unit": "days"},
            "rate_every",
            "every 1000000 days is longer than SCHEDULES_MAX_AHEAD",
        ),
        (
            {"schedule_type": "cron", "cron": "0 9 * * *", "time_zone": "Europe/Pariss"},
            "time_zone",
            "'Europe/Pariss' is not a known time zone",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "ends_at": "start"},
            "ends_at",
            "must be after starts_at",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "max_runs": 0},
            "max_runs",
            "a whole number from 1 to 2147483647",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "due_at": "start"},
            "due_at",
            "a recurring job's times come from its rule",
        ),
        ({"schedule_type": "once", "cron": "0 9 * * *"}, "cron", "applies to a recurring job"),
        ({"schedule_type": "once"}, "due_at", "a one-off job needs it"),
        ({"schedule_type": "weekly"}, "schedule_type", "must be one of once, rate, cron"),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "missed_policy": "x"},
            "missed_policy",
            "must be one of run_once, run_all, skip",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "overlap_policy": "x"},
            "overlap_policy",
            "must be one of skip, allow",
        ),
        (
            {"schedule_type": "cron", "cron": "* * * * *", "starts_at": "naive"},
            "starts_at",
            "must include a time zone",
        ),
        ({"poll_interval": 5, "poll_max_checks": 3}, "poll_interval", "does not poll"),
    ],
)
def test_bad_rules_are_refused_naming_the_field_and_the_rule(start, kwargs, field, text):
    values = {"start": start, "naive": start.replace(tzinfo=None)}
    kwargs = {k: values.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    kwargs.setdefault("starts_at", start)
    if kwargs.get("schedule_type") == "once" or "poll_interval" in kwargs:
        kwargs.pop("starts_at")
    if "poll_interval" in kwargs:
        kwargs["due_at"] = start
    with pytest.raises(ValidationError) as caught:
        services.job_schedule(action="noop", **kwargs)
    assert any(text in m for m in caught.value.message_dict[field]), caught.value.message_dict
    assert not Job.objects.exists() and not Step.objects.exists()


def test_a_rate_faster_than_the_minimum_is_refused(start, settings):
    settings.SCHEDULES_MIN_RATE_SECONDS = 30
    with pytest.raises(ValidationError) as caught:
        every_minute(start, rate_every=10, rate_unit="seconds")
    assert "faster than the minimum of 30 s (SCHEDULES_MIN_RATE_SECONDS)" in str(caught.value)


def test_a_rule_with_no_occurrence_left_is_refused(start):
    now = timezone.now()
    with pytest.raises(ValidationError) as caught:
        every_minute(now - dt.timedelta(hours=2), ends_at=now - dt.timedelta(hours=1))
    assert caught.value.message_dict["ends_at"] == ["the rule has no occurrence after now"]


def test_a_bad_rule_change_is_refused_and_leaves_the_plan_as_it_was(start):
    job = every_minute(start)
    step = next_step(job)
    with pytest.raises(ValidationError) as caught:
        services.job_update(job=job, rate_every=5, ends_at=start - dt.timedelta(days=1))
    assert "must be after starts_at" in caught.value.message_dict["ends_at"][0]
    step.refresh_from_db()
    job.refresh_from_db()
    assert step.state == StepState.SCHEDULED and step.version == 1
    assert job.rate_every == 1 and job.ends_at is None
    with pytest.raises(ValidationError) as caught:
        services.job_update(job=job, schedule_type="once")
    assert "between one-off and recurring" in caught.value.message_dict["schedule_type"][0]
