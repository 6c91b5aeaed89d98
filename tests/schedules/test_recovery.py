"""Steps in flight are held under leases; the recovery pass releases those nothing will run.

A live holder's steps are never touched; a holder whose lease lapsed is gone, and its
steps are released again at once (a running one is taken over); a step in the broker
is republished when the broker's queue is empty after a grace (the message was lost),
or after SCHEDULES_REDELIVER_AFTER otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from schedules import services
from schedules.dispatcher import Dispatcher
from schedules.models import Run, RunStatus, Step, StepState
from schedules.services.leases import LeaseKeeper, steps_renew

pytestmark = pytest.mark.django_db(transaction=True)


def a_step(now: dt.datetime, **fields: object) -> Step:
    step = services.job_schedule(action="noop", due_at=now).steps.get()
    Step.objects.filter(pk=step.pk).update(**fields)
    step.refresh_from_db()
    return step


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", sent.extend)
    return sent


def recover(now: dt.datetime, *, empty: bool | None) -> services.Recovered:
    asked: list[bool] = []

    def queue_empty() -> bool | None:
        asked.append(True)
        return empty

    return services.steps_recover(now=now, queue_empty=queue_empty)


def test_steps_of_a_holder_whose_lease_lapsed_are_released_again(now, published):
    lapsed = now - dt.timedelta(seconds=1)
    claimed = a_step(now, state=StepState.QUEUED, queued_at=now, holder="dispatcher:a:1")
    Step.objects.filter(pk=claimed.pk).update(lease_until=lapsed)
    running = a_step(
        now, state=StepState.RUNNING, holder="worker:b:2", lease_until=lapsed, attempts=1
    )
    alive = a_step(
        now,
        state=StepState.RUNNING,
        holder="worker:c:3",
        lease_until=now + dt.timedelta(seconds=10),
        attempts=1,
    )
    counts = recover(now, empty=False)
    assert counts.holder_gone == 2 and counts.total == 2
    assert sorted(published) == sorted([(claimed.pk, 1), (running.pk, 1)])
    claimed.refresh_from_db()
    assert claimed.holder == "" and claimed.lease_until is None and claimed.queued_at == now
    running.refresh_from_db()
    # A running step keeps its lapsed lease: that is what lets the next delivery take over.
    assert running.state == StepState.RUNNING and running.holder == ""
    assert running.lease_until == lapsed
    alive.refresh_from_db()
    assert alive.holder == "worker:c:3" and alive.lease_until > now  # never touched


def test_a_running_step_released_again_is_taken_over_and_marked_uncertain(now, published):
    job = services.job_schedule(
        action="send_email",
        due_at=now,
        payload={"to": ["a@example.com"], "subject": "s", "body": "b"},
    )
    step = job.steps.get()
    first = services.step_execute(step_id=step.pk, version=1)
    assert first.status == RunStatus.SUCCEEDED
    # Pretend the first attempt's worker died mid-run instead: running, lease lapsed.
    Step.objects.filter(pk=step.pk).update(
        state=StepState.RUNNING, holder="worker:dead:9", lease_until=now
    )
    Run.objects.filter(pk=first.pk).update(status=RunStatus.RUNNING)
    assert recover(timezone.now(), empty=False).holder_gone == 1
    second = services.step_execute(step_id=step.pk, version=1, worker="worker:alive:1")
    assert second.status == RunStatus.SUCCEEDED and second.attempt == 2
    assert second.uncertain and "may already have had its effect" in second.note
    assert Run.objects.get(pk=first.pk).status == RunStatus.ABANDONED


def test_a_step_in_the_broker_is_republished_when_the_queue_is_empty(now, published, settings):
    settings.SCHEDULES_LOST_MESSAGE_GRACE = 10
    settings.SCHEDULES_REDELIVER_AFTER = 300
    lost = a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(seconds=11))
    fresh = a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(seconds=5))
    # The queue still holds messages: nothing is republished before REDELIVER_AFTER.
    assert recover(now, empty=False).total == 0
    assert recover(now, empty=None).total == 0  # the broker did not say
    assert published == []
    counts = recover(now, empty=True)
    assert counts.lost_in_broker == 1 and published == [(lost.pk, 1)]
    lost.refresh_from_db()
    assert lost.queued_at == now  # not again before another grace
    assert recover(now + dt.timedelta(seconds=1), empty=True).total == 0
    fresh.refresh_from_db()
    assert fresh.queued_at == now - dt.timedelta(seconds=5)


def test_a_step_overdue_on_another_engine_is_released_from_the_database(now, published):
    undelivered = a_step(now, engine="stepfunctions", due_at=now - dt.timedelta(minutes=6))
    a_step(now, engine="stepfunctions")  # not overdue yet
    assert services.steps_release_overdue(now=now) == 1
    assert published == [(undelivered.pk, 1)]
    undelivered.refresh_from_db()
    assert undelivered.state == StepState.QUEUED and undelivered.queued_at == now


def test_a_step_queued_too_long_is_republished_even_behind_a_backlog(now, published, settings):
    settings.SCHEDULES_REDELIVER_AFTER = 60
    old = a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(seconds=61))
    a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(seconds=30))
    # The dispatcher's frequent pass leaves these to its sweep (it would read every step
    # waiting in the broker every few seconds).
    assert services.steps_recover(now=now, queue_empty=lambda: False, queued_too_long=False) == (
        services.Recovered()
    )
    counts = recover(now, empty=False)
    assert counts.queued_too_long == 1 and published == [(old.pk, 1)]


def test_the_broker_is_asked_only_when_a_step_may_be_lost(now, published, monkeypatch):
    a_step(now, state=StepState.QUEUED, queued_at=now)  # just published
    asked: list[bool] = []
    services.steps_recover(now=now, queue_empty=lambda: asked.append(True) or True)
    assert asked == []


def test_one_log_line_per_pass_with_counts(now, published, caplog, settings):
    settings.SCHEDULES_REDELIVER_AFTER = 60
    for _ in range(5):
        a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(minutes=5))
    with caplog.at_level(logging.INFO, logger="schedules.services.dispatch"):
        recover(now, empty=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "schedules.services.dispatch"]
    assert lines == [
        "recovery: released again 5 step(s): 0 whose holder is gone, 0 lost in the broker "
        "(queue empty), 5 queued for over 60 s"
    ]


def test_a_worker_holds_the_current_versions_of_its_message_and_renews_them(now):
    held = a_step(now, state=StepState.QUEUED, queued_at=now)
    stale = a_step(now, state=StepState.QUEUED, queued_at=now, version=2)
    done = a_step(now, state=StepState.SUCCEEDED)
    pairs = [[held.pk, 1], [stale.pk, 1], [done.pk, 1]]
    assert services.steps_hold(pairs, holder="w:1", lease=20) == [held.pk]
    held.refresh_from_db()
    assert held.holder == "w:1" and held.lease_until > now + dt.timedelta(seconds=19)
    stale.refresh_from_db()
    assert stale.holder == "" and stale.lease_until is None
    # Renewal pushes only the holder's own steps.
    assert steps_renew([held.pk, stale.pk], holder="w:1", lease=60) == 1
    assert steps_renew([held.pk], holder="someone else", lease=60) == 0
    held.refresh_from_db()
    assert held.lease_until > now + dt.timedelta(seconds=59)
    # Letting go: in the broker again, held by nobody, its time in the queue restarts.
    assert services.steps_let_go([held.pk], holder="w:1") == 1
    held.refresh_from_db()
    assert held.holder == "" and held.lease_until is None and held.queued_at > now


def test_the_keeper_renews_from_its_thread_until_released(now):
    step = a_step(now, state=StepState.QUEUED, queued_at=now)
    services.steps_hold([[step.pk, 1]], holder="w:2", lease=1)
    keeper = LeaseKeeper("w:2", lease=30, every=0.05)
    keeper.hold([step.pk])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            step.refresh_from_db()
            if step.lease_until > timezone.now() + dt.timedelta(seconds=20):
                break
            time.sleep(0.05)
        assert step.lease_until > timezone.now() + dt.timedelta(seconds=20)
        keeper.release([step.pk])
        assert keeper.renew() == 0
    finally:
        keeper.stop()


def test_a_dispatcher_claim_carries_its_name_and_is_let_go_after_the_publish(now, published):
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 3)
    dispatcher = Dispatcher(batch_size=10)
    seen: list[tuple[str, bool]] = []

    def publish(rows: list[tuple[int, int]]) -> None:
        # While the publish is in flight the claim is this dispatcher's, under a lease.
        for step in Step.objects.filter(pk__in=[pk for pk, _ in rows]):
            seen.append((step.holder, step.lease_until is not None))

    import schedules.dispatcher as module

    original = module.steps_publish
    module.steps_publish = publish  # type: ignore[assignment]
    try:
        assert dispatcher.release_once() == 3
    finally:
        module.steps_publish = original
        dispatcher.keeper.stop()
    assert seen == [(dispatcher.name, True)] * 3
    assert set(Step.objects.values_list("state", "holder")) == {(StepState.QUEUED, "")}
    assert not Step.objects.filter(lease_until__isnull=False).exists()


def test_the_claim_of_a_dispatcher_that_died_before_publishing_is_released(
    now, published, settings
):
    settings.SCHEDULES_DISPATCH_LEASE_SECONDS = 5
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 2)
    rows = services.steps_claim_due(limit=10, holder="dispatcher:dead:1", lease=5)
    assert len(rows) == 2
    # Within its lease the claim is left alone (its dispatcher may be publishing).
    assert recover(timezone.now(), empty=False).total == 0
    counts = recover(timezone.now() + dt.timedelta(seconds=6), empty=False)
    assert counts.holder_gone == 2 and sorted(published) == sorted(rows)


def test_the_lease_index_serves_the_recovery_pass_behind_a_backlog(now):
    """With thousands of steps queued in the broker, the pass reads only the held ones
    (the partial index on lease_until), not every queued step."""
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 3000)
    Step.objects.update(state=StepState.QUEUED, queued_at=now)
    held = Step.objects.order_by("pk").values_list("pk", flat=True)[:3]
    Step.objects.filter(pk__in=list(held)).update(holder="w:1", lease_until=now)
    sql = (
        f"SELECT id FROM {Step._meta.db_table} WHERE lease_until < %s AND holder <> '' "
        "AND state IN ('queued', 'running')"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", [timezone.now().isoformat()])
            plan = " ".join(str(row) for row in cursor.fetchall())
        else:
            cursor.execute(f"EXPLAIN {sql}", [timezone.now()])
            plan = " ".join(row[0] for row in cursor.fetchall())
    assert "step_lease" in plan


def test_while_no_worker_consumes_the_sweep_says_so_in_one_line(now, settings, caplog):
    settings.SCHEDULES_LOST_MESSAGE_GRACE = 10
    for seconds in (64, 30, 12, 2):
        a_step(now, state=StepState.QUEUED, queued_at=now - dt.timedelta(seconds=seconds))
    report = services.steps_waiting_report(now=now, queue_length=lambda: 700)
    assert report == (
        "3 step(s) have waited in the broker for over 10 s (the oldest 64 s) and queue "
        f"{settings.CELERY_TASK_DEFAULT_QUEUE!r} holds 700 message(s): is a worker consuming it?"
    )
    # An empty queue is the recovery pass's business (it publishes them again), not this.
    assert services.steps_waiting_report(now=now, queue_length=lambda: 0) == ""
    assert services.steps_waiting_report(now=now, queue_length=lambda: None) == ""


def test_the_broker_queue_length_is_read_from_the_broker(settings):
    """The folder broker: a queue nobody declared is empty; a published message counts."""
    from schedules.services.dispatch import broker_queue_length

    settings.CELERY_TASK_DEFAULT_QUEUE = f"test-length-{uuid.uuid4().hex[:8]}"
    assert broker_queue_length() == 0
    services.steps_publish([(1, 1)])
    assert broker_queue_length() == 1
