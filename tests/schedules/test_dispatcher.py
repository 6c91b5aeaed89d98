"""The local engine's dispatcher: batches by due time, never releases a step twice, wakes early."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from schedules import services
from schedules.dispatcher import Dispatcher
from schedules.models import Step, StepState

pytestmark = pytest.mark.django_db(transaction=True)


def due_jobs(count: int, when: dt.datetime) -> None:
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": when} for _ in range(count)])


def test_claim_takes_due_steps_in_order_up_to_the_batch(now):
    services.job_schedule(action="noop", due_at=now - dt.timedelta(seconds=5))
    services.job_schedule(action="noop", due_at=now - dt.timedelta(seconds=10))
    services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=1))
    claimed = services.steps_claim_due(limit=1, now=now)
    first = Step.objects.get(pk=claimed[0][0])
    assert first.due_at == now - dt.timedelta(seconds=10) and first.state == StepState.QUEUED
    assert len(services.steps_claim_due(limit=10, now=now)) == 1
    assert services.steps_claim_due(limit=10, now=now) == []
    assert Step.objects.filter(state=StepState.SCHEDULED).count() == 1


def test_claim_ignores_steps_of_other_engines(now):
    services.job_schedule(action="noop", due_at=now)
    Step.objects.update(engine="stepfunctions")
    assert services.steps_claim_due(limit=10, now=now) == []


def test_two_dispatchers_never_release_a_step_twice(now):
    """SKIP LOCKED on PostgreSQL, IMMEDIATE transactions on SQLite."""
    due_jobs(600, now - dt.timedelta(seconds=1))
    start = threading.Barrier(2)
    released: list[list[tuple[int, int]]] = [[], []]
    errors: list[BaseException] = []

    def dispatcher(slot: int) -> None:
        try:
            start.wait()
            while rows := services.steps_claim_due(limit=25):
                released[slot].extend(rows)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ids = [pk for rows in released for pk, _ in rows]
    assert len(ids) == len(set(ids)) == 600
    assert Step.objects.filter(state=StepState.QUEUED).count() == 600
    if connection.vendor == "postgresql":
        # Both made progress at once rather than one waiting for the other.
        assert released[0] and released[1]


def test_dispatcher_sleeps_until_due_and_is_woken_by_an_earlier_step(monkeypatch, settings):
    settings.SCHEDULES_DISPATCH_WAKE_POLL = 0.01
    published: list[tuple[float, list[tuple[int, int]]]] = []
    monkeypatch.setattr(
        "schedules.dispatcher.steps_publish",
        lambda rows: published.append((time.time(), list(rows))),
    )
    # Something far away, so the dispatcher goes to sleep for max_sleep.
    services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    stop = threading.Event()
    dispatcher = Dispatcher(max_sleep=60, sweep_interval=600, stop=stop)

    def run() -> None:
        try:
            dispatcher.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(0.5)  # let it fall asleep
        assert published == []
        due = timezone.now() + dt.timedelta(seconds=1)
        job = services.job_schedule(action="noop", due_at=due)
        deadline = time.time() + 20
        while not published and time.time() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(published) == 1
    at, rows = published[0]
    assert rows == [(job.steps.get().pk, 1)]
    # Released at its due time, not before, and long before the 60 s sleep would end.
    assert due.timestamp() <= at < due.timestamp() + 10
    assert dispatcher.stats.released == 1


def test_dispatcher_works_through_a_backlog_in_batches(monkeypatch):
    batches: list[int] = []
    monkeypatch.setattr(
        "schedules.dispatcher.steps_publish", lambda rows: batches.append(len(rows))
    )
    due_jobs(250, timezone.now() - dt.timedelta(seconds=1))
    dispatcher = Dispatcher(batch_size=100, max_sleep=1, sweep_interval=600)
    while dispatcher.release_once():
        pass
    assert batches == [100, 100, 50]
