"""The Celery tasks: run_steps runs a released chunk step by step, and keeps what is left."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from schedules import services
from schedules.models import Run, RunStatus, Step, StepState
from schedules.services import execution
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


def test_a_database_error_is_retried_in_place_and_each_step_runs_once(monkeypatch):
    pairs = released(3)
    real = execution._claim
    calls: list[int] = []

    def flaky_claim(step: Any, *args: Any) -> Any:
        calls.append(step.pk)
        if len(calls) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real(step, *args)

    monkeypatch.setattr(execution, "_claim", flaky_claim)
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    tasks.run_steps.run(pairs)
    assert calls == [pairs[0][0], pairs[1][0], pairs[1][0], pairs[2][0]]
    assert set(Step.objects.values_list("state", "holder")) == {(StepState.SUCCEEDED, "")}
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3
    assert Run.objects.count() == 3


def test_the_message_s_steps_are_held_from_its_start(monkeypatch):
    pairs = released(2)
    holders: list[tuple[str, str]] = []
    real = execution._claim

    def look(step: Any, *args: Any) -> Any:
        holders.extend(Step.objects.order_by("pk").values_list("holder", "state"))
        return real(step, *args)

    monkeypatch.setattr(execution, "_claim", look)
    tasks.run_steps.run(pairs)
    worker = holders[0][0]
    assert worker.endswith(f":{__import__('os').getpid()}")
    # Before the first claim both steps are this process's; before the second, the first
    # has been recorded and let go.
    assert holders == [
        (worker, "queued"),
        (worker, "queued"),
        ("", "succeeded"),
        (worker, "queued"),
    ]


def test_a_long_chunk_hands_its_rest_to_a_new_message(monkeypatch, settings):
    settings.CELERY_TASK_SOFT_TIME_LIMIT = 0  # every step is past the budget
    pairs = released(3)
    sent: list[Any] = []
    monkeypatch.setattr(tasks.run_steps, "apply_async", lambda args: sent.append(args))
    tasks.run_steps.run(pairs)
    assert Step.objects.get(pk=pairs[0][0]).state == StepState.SUCCEEDED
    assert sent == [(pairs[1:],)]
    # The rest is in the broker again, held by nobody (the new message's worker holds it).
    assert set(
        Step.objects.filter(pk__in=[pk for pk, _ in pairs[1:]]).values_list("state", "holder")
    ) == {(StepState.QUEUED, "")}
