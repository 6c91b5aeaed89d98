"""The local engine's dispatcher: batches by due time, never releases a step twice, wakes early."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection
from django.utils import timezone

from schedules import services
from schedules.dispatcher import Dispatcher
from schedules.models import Step, StepState
from schedules.services.dispatch import chunks

pytestmark = pytest.mark.django_db(transaction=True)


def due_jobs(count: int, when: dt.datetime) -> None:
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": when} for _ in range(count)])


@contextlib.contextmanager
def running(dispatcher: Dispatcher) -> Iterator[Dispatcher]:
    """The dispatcher's loop in a thread, stopped and joined on exit."""

    def run() -> None:
        try:
            dispatcher.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


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


def test_arming_a_local_step_twice_releases_it_once(now):
    """The row is the timer: syncing (arming) it again adds no second release."""
    job = services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=1))
    step = job.steps.get()
    services.steps_sync(step_ids=[step.pk])
    services.steps_sync(step_ids=[step.pk])
    later = now + dt.timedelta(seconds=2)
    assert services.steps_claim_due(limit=10, now=later) == [(step.pk, 1)]
    services.steps_sync(step_ids=[step.pk])  # arming a released step does not re-release it
    assert services.steps_claim_due(limit=10, now=later) == []


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
    settings.SCHEDULES_DISPATCH_LOOKAHEAD = 0.3
    published: list[tuple[float, list[tuple[int, int]]]] = []
    monkeypatch.setattr(
        "schedules.dispatcher.steps_publish",
        lambda rows: published.append((time.time(), list(rows))),
    )
    # Something far away, so the dispatcher goes to sleep for max_sleep.
    services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    with running(Dispatcher(max_sleep=60, sweep_interval=600)) as dispatcher:
        time.sleep(0.5)  # let it fall asleep
        assert published == []
        due = timezone.now() + dt.timedelta(seconds=1)
        job = services.job_schedule(action="noop", due_at=due)
        deadline = time.time() + 20
        while not published and time.time() < deadline:
            time.sleep(0.01)
    assert len(published) == 1
    at, rows = published[0]
    assert rows == [(job.steps.get().pk, 1)]
    # Released the lookahead before its due time (the worker holds it until due),
    # not earlier, and long before the 60 s sleep would end.
    assert due.timestamp() - 0.3 <= at < due.timestamp() + 10
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


def test_a_failed_publish_gives_the_claim_back_and_the_dispatcher_carries_on(monkeypatch):
    monkeypatch.setattr("schedules.dispatcher.ERROR_BACKOFF_BASE", 0.01)
    attempts: list[list[tuple[int, int]]] = []

    def publish(rows: list[tuple[int, int]]) -> None:
        attempts.append(list(rows))
        if len(attempts) == 1:
            raise ConnectionError("broker down")

    monkeypatch.setattr("schedules.dispatcher.steps_publish", publish)
    due_jobs(3, timezone.now() - dt.timedelta(seconds=1))
    with running(Dispatcher(max_sleep=0.05, sweep_interval=600)) as dispatcher:
        deadline = time.time() + 20
        while len(attempts) < 2 and time.time() < deadline:
            time.sleep(0.01)
    # The failed batch was given back and released again, whole, on the next turn.
    assert len(attempts) == 2 and sorted(attempts[0]) == sorted(attempts[1])
    assert dispatcher.stats.errors == 1 and dispatcher.stats.released == 3
    assert set(Step.objects.values_list("state", flat=True)) == {StepState.QUEUED}


def test_unclaim_is_fenced_by_version(now):
    due_jobs(2, now - dt.timedelta(seconds=1))
    rows = services.steps_claim_due(limit=10)
    first, second = sorted(rows)
    Step.objects.filter(pk=first[0]).update(version=5)  # changed since the claim
    assert services.steps_unclaim(rows) == 1
    assert Step.objects.get(pk=first[0]).state == StepState.QUEUED
    assert Step.objects.get(pk=second[0]).state == StepState.SCHEDULED


def test_claim_takes_steps_within_the_lookahead_only(now, settings):
    settings.SCHEDULES_DISPATCH_LOOKAHEAD = 0.5
    due_jobs(1, now + dt.timedelta(seconds=0.4))
    due_jobs(1, now + dt.timedelta(seconds=0.6))
    (claimed,) = services.steps_claim_due(limit=10, now=now)
    assert Step.objects.get(pk=claimed[0]).due_at == now + dt.timedelta(seconds=0.4)


def test_claim_takes_no_write_lock_when_nothing_is_due(now, django_assert_num_queries):
    due_jobs(1, now + dt.timedelta(hours=1))
    with django_assert_num_queries(1):  # the read of the next due time, no transaction
        assert services.steps_claim_due(limit=10, now=now) == []


@pytest.mark.parametrize(
    ("count", "chunk", "spread", "sizes"),
    [
        (0, 50, 2, []),
        (1, 50, 2, [1]),
        (5, 50, 2, [3, 2]),
        (120, 50, 2, [40, 40, 40]),
        (7, 1, 2, [1] * 7),
        (10, 50, 4, [3, 3, 2, 2]),
    ],
)
def test_a_batch_is_dealt_round_robin_into_messages(settings, count, chunk, spread, sizes):
    settings.SCHEDULES_DISPATCH_CHUNK = chunk
    settings.SCHEDULES_DISPATCH_SPREAD = spread
    pairs = [(i, 1) for i in range(count)]
    messages = chunks(pairs)
    assert [len(m) for m in messages] == sizes
    assert sorted(p for m in messages for p in m) == pairs  # each step in exactly one
    assert all(m == sorted(m) for m in messages)  # each message in due order
