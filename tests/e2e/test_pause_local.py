"""End to end on the embedded default: a recurring job paused across two occurrences runs
nothing while paused, and once resumed runs by its missed policy (run once), then on time."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Run, RunStatus, StepState

from .conftest import Stack

pytestmark = pytest.mark.e2e

EVERY = dt.timedelta(seconds=2)


def runs_of(job: Job) -> list[Run]:
    return list(Run.objects.filter(job=job).exclude(status=RunStatus.SKIPPED).order_by("pk"))


def wait_for_runs(job: Job, count: int, timeout: float, stack: Stack) -> list[Run]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = runs_of(job)
        if len(runs) >= count and all(r.status == RunStatus.SUCCEEDED for r in runs):
            return runs
        time.sleep(0.05)
    seen = [(r.due_at, r.status, r.note) for r in runs_of(job)]
    pytest.fail(f"{count} runs expected after {timeout} s, got {seen}\n{stack.logs()}")


def test_a_job_paused_across_two_occurrences_runs_by_its_policy_once_resumed(
    stack: Stack,
) -> None:
    start = timezone.now() + EVERY
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=2,
        rate_unit="seconds",
        starts_at=start,
        missed_policy="run_once",
    )
    (first,) = wait_for_runs(job, 1, 30, stack)
    services.job_pause(job=job, reason="e2e")  # its next occurrence is ~2 s away
    paused_at = timezone.now()
    (held,) = job.steps.filter(state=StepState.PAUSED)
    assert held.due_at == start + EVERY and held.due_at > paused_at

    # Two occurrences (the held one and the one after) fall due while paused: none runs.
    quiet_until = held.due_at + EVERY + dt.timedelta(seconds=0.5)
    while timezone.now() < quiet_until:
        assert runs_of(job) == [first], stack.logs()
        time.sleep(0.1)
    job.refresh_from_db()
    assert job.status == PlanStatus.PAUSED

    services.job_resume(job=job)
    resumed_at = timezone.now()
    _, caught_up, on_time = wait_for_runs(job, 3, 30, stack)

    # Run once for the missed occurrences: the held one, released at resume...
    assert caught_up.due_at == held.due_at and caught_up.started_at >= resumed_at
    assert "1 later occurrence already due when taken" in caught_up.note
    assert "ran once for all of them" in caught_up.note
    # ...then the rule goes on with the first occurrence after the resume, on time.
    assert on_time.due_at == held.due_at + 2 * EVERY > resumed_at
    assert on_time.lateness is not None and on_time.lateness < dt.timedelta(seconds=1)
    # Nothing ran while paused, not even a message already on its way.
    assert not Run.objects.filter(job=job, started_at__gt=paused_at, started_at__lt=resumed_at)
    services.job_cancel(job=job)
