"""The worker: retries with backoff, permanent failures, early messages, lost work."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from django.db.models import F
from django.utils import timezone

from schedules import services
from schedules.models import PlanStatus, Run, RunStatus, Step, StepState
from schedules.services.leases import LeaseKeeper
from workers.actions import PermanentError, TransientError, register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

OUTCOMES: list[Exception | None] = []


@pytest.fixture
def flaky_action():
    """An action that raises the queued outcomes in turn, then succeeds."""

    @register("flaky", payload=NoopPayload, description="test")
    def flaky(ctx: Any, payload: Any) -> dict[str, Any]:
        outcome = OUTCOMES.pop(0) if OUTCOMES else None
        if outcome:
            raise outcome
        return {"attempt": ctx.attempt}

    OUTCOMES.clear()
    yield OUTCOMES
    REGISTRY.pop("flaky")


def run_due(step: Step) -> Run:
    """Deliver the step's current version now, as the engine would."""
    step.refresh_from_db()
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


def test_transient_errors_retry_with_backoff_then_succeed(flaky_action, settings):
    settings.SCHEDULES_RETRY_BASE = 10
    flaky_action.extend([TransientError("timeout"), TransientError("503")])
    job = services.job_schedule(action="flaky", due_at=timezone.now(), max_attempts=3)
    step = job.steps.get()
    before = timezone.now()
    first = run_due(step)
    step.refresh_from_db()
    assert first.status == RunStatus.RETRYING and "timeout" in first.error
    assert step.state == StepState.SCHEDULED and step.version == 2
    # Exponential backoff with jitter: attempt 1 waits 5..10 s, attempt 2 waits 10..20 s.
    assert 5 <= (step.due_at - before).total_seconds() <= 11
    second = run_due(step)
    step.refresh_from_db()
    assert second.status == RunStatus.RETRYING and second.attempt == 2
    third = run_due(step)
    assert third.status == RunStatus.SUCCEEDED and third.attempt == 3
    job.refresh_from_db()
    assert job.status == PlanStatus.SUCCEEDED


def test_backoff_grows_exponentially_and_is_capped(settings):
    settings.SCHEDULES_RETRY_BASE = 2
    settings.SCHEDULES_RETRY_MAX = 60
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (10, 60)]:
        delays = [services.retry_delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_gives_up_after_max_attempts_and_records_the_last_error(flaky_action):
    flaky_action.extend([TransientError("first"), TransientError("second")])
    job = services.job_schedule(action="flaky", due_at=timezone.now(), max_attempts=2)
    step = job.steps.get()
    run_due(step)
    last = run_due(step)
    assert last.status == RunStatus.FAILED and "second" in last.error
    assert "gave up after 2 attempts" in last.note
    step.refresh_from_db()
    job.refresh_from_db()
    assert step.state == StepState.FAILED and job.status == PlanStatus.FAILED


def test_permanent_errors_do_not_retry(flaky_action):
    flaky_action.append(PermanentError("400 bad request"))
    job = services.job_schedule(action="flaky", due_at=timezone.now(), max_attempts=5)
    run = run_due(job.steps.get())
    assert run.status == RunStatus.FAILED and "400 bad request" in run.error
    assert Run.objects.filter(step__job=job).count() == 1


def test_a_failed_job_can_run_again(flaky_action):
    flaky_action.append(PermanentError("nope"))
    job = services.job_schedule(action="flaky", due_at=timezone.now(), max_attempts=1)
    run_due(job.steps.get())
    services.job_run_now(job=job)
    run = run_due(job.steps.get())
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1


def test_lateness_is_action_start_minus_due():
    due = timezone.now() - dt.timedelta(seconds=3)
    job = services.job_schedule(action="noop", due_at=due)
    step = job.steps.get()
    run = services.step_execute(step_id=step.pk, version=1)
    assert dt.timedelta(seconds=3) <= run.lateness < dt.timedelta(seconds=5)
    assert run.result["started_unix"] >= due.timestamp()


def test_an_early_message_is_held_until_due(settings):
    settings.SCHEDULES_EARLY_HOLD_MAX = 5
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(seconds=1))
    step = job.steps.get()
    run = services.step_execute(step_id=step.pk, version=1)
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["started_unix"] >= step.due_at.timestamp()


def test_a_message_far_too_early_is_rearmed_not_run(recording_engine, settings):
    settings.SCHEDULES_EARLY_HOLD_MAX = 1
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(minutes=5))
    step = job.steps.get()
    run = services.step_execute(step_id=step.pk, version=1)
    assert run.status == RunStatus.SKIPPED and "early; re-armed" in run.note
    step.refresh_from_db()
    assert step.state == StepState.SCHEDULED and step.version == 2
    assert ("arm", step.pk, 2) in recording_engine.calls


def test_cancel_while_running_stops_retries_and_keeps_the_step_cancelled():
    job = services.job_schedule(action="noop", due_at=timezone.now(), max_attempts=3)
    step = job.steps.get()

    class CancelledMidRun(TransientError):
        def __init__(self) -> None:
            services.job_cancel(job=job)  # another user cancels while the action runs
            super().__init__("timeout after cancel")

    @register("cancels_mid_run", payload=NoopPayload, description="test")
    def cancels(ctx: Any, payload: Any) -> None:
        raise CancelledMidRun()

    try:
        Step.objects.filter(pk=step.pk).update(action="cancels_mid_run")
        run = services.step_execute(step_id=step.pk, version=1)
    finally:
        REGISTRY.pop("cancels_mid_run")
    assert run.status == RunStatus.FAILED
    assert "cancelled or rescheduled while it ran" in run.note
    step.refresh_from_db()
    job.refresh_from_db()
    assert step.state == StepState.CANCELLED and job.status == PlanStatus.CANCELLED


def test_a_reschedule_during_the_early_hold_wins(settings, monkeypatch):
    settings.SCHEDULES_EARLY_HOLD_MAX = 5
    job = services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(seconds=1))
    step = job.steps.get()

    def reschedule_instead_of_sleeping(seconds: float) -> None:
        services.job_reschedule(job=job, due_at=timezone.now() + dt.timedelta(hours=1))

    monkeypatch.setattr("schedules.services.execution.time.sleep", reschedule_instead_of_sleeping)
    run = services.step_execute(step_id=step.pk, version=1)
    assert run.status == RunStatus.SKIPPED
    assert "stale message: version 1, the step is at version 2" in run.note
    step.refresh_from_db()
    assert step.state == StepState.SCHEDULED and step.attempts == 0


def test_an_attempt_that_lost_its_lease_cannot_finish_the_step():
    """If an attempt outlives its lease and is taken over, only the taker settles the step."""
    job = services.job_schedule(action="noop", due_at=timezone.now())
    step = job.steps.get()

    @register("outlives_lease", payload=NoopPayload, description="test")
    def outlives_lease(ctx: Any, payload: Any) -> dict[str, Any]:
        # Another worker took the step over while this attempt was still running.
        Step.objects.filter(pk=ctx.step_id).update(
            attempts=F("attempts") + 1,
            holder="worker:other:1",
            lease_until=timezone.now() + dt.timedelta(minutes=5),
        )
        return {}

    try:
        Step.objects.filter(pk=step.pk).update(action="outlives_lease")
        run = services.step_execute(step_id=step.pk, version=1)
    finally:
        REGISTRY.pop("outlives_lease")
    assert run.status == RunStatus.SUCCEEDED
    assert "its lease expired and another attempt took over" in run.note
    step.refresh_from_db()
    assert step.state == StepState.RUNNING  # still owned by the attempt that took over


def test_a_long_action_keeps_its_lease_and_a_second_delivery_does_nothing(settings):
    """The lease is renewed while the action runs, so an action longer than the lease is
    not taken over, and a duplicate delivery meanwhile is skipped."""
    settings.SCHEDULES_LEASE_SECONDS = 1
    job = services.job_schedule(action="noop", due_at=timezone.now())
    step = job.steps.get()
    seen: dict[str, Any] = {}

    @register("outlives_lease_seconds", payload=NoopPayload, description="test")
    def long_action(ctx: Any, payload: Any) -> dict[str, Any]:
        time.sleep(2.5)  # two and a half leases
        seen["lease_left"] = (
            Step.objects.get(pk=ctx.step_id).lease_until - timezone.now()
        ).total_seconds()
        seen["second"] = services.step_execute(step_id=ctx.step_id, version=ctx.version)
        return {}

    keeper = LeaseKeeper("worker:test:1", lease=1, every=0.25)
    try:
        Step.objects.filter(pk=step.pk).update(action="outlives_lease_seconds")
        run = services.step_execute(
            step_id=step.pk, version=1, worker="worker:test:1", keeper=keeper
        )
    finally:
        keeper.stop()
        REGISTRY.pop("outlives_lease_seconds")
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1
    assert seen["lease_left"] > 0  # renewed past its first expiry
    assert seen["second"].status == RunStatus.SKIPPED
    assert "running under a live lease" in seen["second"].note
    assert keeper.held == frozenset()
