"""On PostgreSQL the worker claims plain steps SCHEDULES_CLAIM_AHEAD before they are due and
commits the claim at the due time: the statements are out of the way, the action never
starts early, nobody sees the claim before the due time, and a cancel that comes
meanwhile waits for the commit and finds the attempt running. SQLite claims at the due
time (an open transaction there would hold the one write lock)."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Run, RunStatus, Step, StepState
from schedules.services import execution
from workers.actions.base import REGISTRY, register
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

RUN_INSERT = f"INSERT INTO {Run._meta.db_table}"
STEP_TAKE = f"UPDATE {Step._meta.db_table} SET state = %s, holder = %s"


@pytest.fixture
def starts() -> Iterator[list[float]]:
    """An action that notes when it starts."""
    started: list[float] = []

    @register("note_start", payload=NoopPayload, description="test")
    def note_start(ctx: Any, payload: Any) -> None:
        started.append(time.time())

    try:
        yield started
    finally:
        REGISTRY.pop("note_start")


def released(due_at: dt.datetime) -> list[list[int]]:
    services.job_schedule(action="note_start", due_at=due_at)
    return [[pk, v] for pk, v in services.steps_claim_due(limit=1, holder="", now=due_at)]


def in_a_thread(func: Any) -> threading.Thread:
    """``func`` on a thread of its own, so on a database connection of its own."""

    def target() -> None:
        try:
            func()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_the_claim_is_made_ahead_on_postgresql_and_commits_at_the_due_time(starts, settings):
    settings.SCHEDULES_CLAIM_AHEAD = 0.3
    due = timezone.now() + dt.timedelta(seconds=0.6)
    pairs = released(due)
    sent: dict[str, float] = {}
    seen: list[tuple[float, str]] = []
    readers: list[threading.Thread] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        for name, start in (("take", STEP_TAKE), ("insert", RUN_INSERT)):
            if sql.startswith(start):
                sent.setdefault(name, time.time())
        if sql.startswith(RUN_INSERT):
            # Another connection, while the claim is open: it must not see it yet.
            readers.append(
                in_a_thread(
                    lambda: seen.append((time.time(), Step.objects.get(pk=pairs[0][0]).state))
                )
            )
        return result

    with connection.execute_wrapper(record):
        services.steps_execute(pairs=pairs, worker="w:1")
    for reader in readers:
        reader.join()
    due_ts = due.timestamp()
    assert len(starts) == 1 and starts[0] >= due_ts  # never early
    run = Run.objects.get(step_id=pairs[0][0])
    assert run.status == RunStatus.SUCCEEDED and run.lateness >= dt.timedelta(0)
    if connection.vendor == "postgresql":
        assert execution.claim_ahead() == 0.3
        assert sent["take"] < due_ts and sent["insert"] < due_ts  # the statements, ahead
        ((read_at, state),) = seen
        assert read_at < due_ts and state == StepState.QUEUED  # not committed before due
    else:
        assert execution.claim_ahead() == 0.0
        assert sent["take"] >= due_ts  # SQLite claims at the due time


def test_a_cancel_while_the_claim_is_ahead_waits_for_it_and_finds_the_attempt_running(
    starts, settings
):
    settings.SCHEDULES_CLAIM_AHEAD = 0.4
    due = timezone.now() + dt.timedelta(seconds=0.7)
    pairs = released(due)
    job = Step.objects.get(pk=pairs[0][0]).job
    assert job is not None
    asked: list[float] = []
    cancelled: list[float] = []
    cancellers: list[threading.Thread] = []

    def cancel_meanwhile(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        result = execute(sql, params, many, context)
        if sql.startswith(RUN_INSERT):

            def cancel() -> None:
                asked.append(time.time())
                with contextlib.suppress(ValidationError):  # SQLite: the job ended first
                    services.job_cancel(job=Job.objects.get(pk=job.pk))
                cancelled.append(time.time())

            cancellers.append(in_a_thread(cancel))
        return result

    with connection.execute_wrapper(cancel_meanwhile):
        services.steps_execute(pairs=pairs, worker="w:1")
    for canceller in cancellers:
        canceller.join()
    assert len(starts) == 1  # whatever the order, the action ran once
    run = Run.objects.get(step_id=pairs[0][0])
    assert run.status == RunStatus.SUCCEEDED
    job.refresh_from_db()
    if connection.vendor == "sqlite":
        # No claim ahead: the cancel waited for the write lock, and came after the claim
        # or after the record, as SQLite handed the lock over.
        assert job.status in (PlanStatus.CANCELLED, PlanStatus.SUCCEEDED)
        return
    # The cancel came before the due time, while the claim was open; it waited for the
    # claim's commit (the job's lock), then cancelled a running attempt: the cancel stands
    # and the record says the attempt ran.
    assert asked[0] < due.timestamp() <= cancelled[0]
    assert job.status == PlanStatus.CANCELLED
    assert Step.objects.get(pk=pairs[0][0]).state == StepState.CANCELLED
    assert "cancelled or rescheduled while it ran" in run.note


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_claim_ahead_out_of_range_is_a_system_check_error(settings, value):
    settings.SCHEDULES_CLAIM_AHEAD = value
    errors = [e for e in checks.run_checks() if e.id == "schedules.E008"]
    assert len(errors) == 1
    assert f"SCHEDULES_CLAIM_AHEAD is {value} s; it must be from 0 to 1.0 s" in errors[0].msg
