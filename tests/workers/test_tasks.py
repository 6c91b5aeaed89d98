"""The Celery tasks: run_steps runs a released chunk step by step, and keeps what is left."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Retry
from django.db import OperationalError
from django.utils import timezone

from schedules import services
from schedules.models import Run, RunStatus, Step, StepState
from workers import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def released(count: int) -> list[list[int]]:
    services.job_schedule_many(
        jobs=[{"action": "noop", "due_at": timezone.now()} for _ in range(count)]
    )
    return [[pk, version] for pk, version in services.steps_claim_due(limit=count)]


def test_run_steps_runs_each_step_of_the_chunk_once():
    pairs = released(3)
    tasks.run_steps.apply(args=(pairs,)).get()
    assert set(Step.objects.values_list("state", flat=True)) == {StepState.SUCCEEDED}
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3


def test_a_database_error_retries_only_the_steps_not_yet_run(monkeypatch):
    pairs = released(3)
    real = services.step_execute
    calls: list[int] = []

    def flaky(*, step_id: int, version: int, worker: str = "") -> Any:
        calls.append(step_id)
        if len(calls) == 2:
            raise OperationalError("database is locked")
        return real(step_id=step_id, version=version, worker=worker)

    monkeypatch.setattr(tasks, "step_execute", flaky)
    retried: list[Any] = []

    def retry(*args: Any, **kwargs: Any) -> Retry:
        retried.append(kwargs["args"])
        return Retry("retry")

    monkeypatch.setattr(tasks.run_steps, "retry", retry)
    with pytest.raises(Retry):
        tasks.run_steps.run(pairs)
    assert retried == [(pairs[1:],)]
    assert Step.objects.get(pk=pairs[0][0]).state == StepState.SUCCEEDED


def test_a_long_chunk_hands_its_rest_to_a_new_message(monkeypatch, settings):
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 0  # every step is past the budget
    pairs = released(3)
    sent: list[Any] = []
    monkeypatch.setattr(tasks.run_steps, "apply_async", lambda args: sent.append(args))
    tasks.run_steps.run(pairs)
    assert Step.objects.get(pk=pairs[0][0]).state == StepState.SUCCEEDED
    assert sent == [(pairs[1:],)]
    assert Step.objects.filter(state=StepState.QUEUED).count() == 2
