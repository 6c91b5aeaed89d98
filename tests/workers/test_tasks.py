"""The Celery tasks: run_steps runs a released chunk (its due steps together), and keeps
what is left."""

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
    real = execution._claim_together
    calls: list[list[int]] = []

    def flaky_claim(steps: Any, *args: Any) -> Any:
        calls.append([step.pk for step in steps])
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(steps, *args)

    monkeypatch.setattr(execution, "_claim_together", flaky_claim)
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    tasks.run_steps.run(pairs)
    ids = [pk for pk, _ in pairs]
    assert calls == [ids, ids]  # the three due together, claimed together, tried again
    assert set(Step.objects.values_list("state", "holder")) == {(StepState.SUCCEEDED, "")}
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 3
    assert Run.objects.count() == 3


def test_a_claim_whose_commit_was_cut_off_is_recognised_not_claimed_twice(monkeypatch):
    """The claim committed but the connection broke before the worker heard: the retry
    finds its own claim (holder, attempt, open run) and runs each step once."""
    pairs = released(2)
    real = execution._claim_together
    calls: list[int] = []

    def cut_off(steps: Any, *args: Any) -> Any:
        calls.append(len(steps))
        claimed = real(steps, *args)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return claimed

    monkeypatch.setattr(execution, "_claim_together", cut_off)
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    tasks.run_steps.run(pairs)
    assert calls == [2]  # the retry recognised both steps as its own: nothing left to claim
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 2
    assert Run.objects.count() == 2
    assert set(Step.objects.values_list("attempts", flat=True)) == {1}


def test_the_message_s_steps_are_held_from_its_start(monkeypatch):
    pairs = released(2)
    holders: list[tuple[str, str]] = []
    real = execution._claim_together

    def look(steps: Any, *args: Any) -> Any:
        holders.extend(Step.objects.order_by("pk").values_list("holder", "state"))
        return real(steps, *args)

    monkeypatch.setattr(execution, "_claim_together", look)
    tasks.run_steps.run(pairs)
    worker = holders[0][0]
    assert worker.endswith(f":{__import__('os').getpid()}")
    # Before the claim both steps are this process's, queued; after the record, nobody's.
    assert holders == [(worker, "queued"), (worker, "queued")]
    assert set(Step.objects.values_list("holder", "state")) == {("", "succeeded")}


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
