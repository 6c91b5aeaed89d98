"""Recording an outcome never runs the action again (invariant 9).

If the transaction that records a finished action fails (the database connection is
cut, the write lock is not free), the record is tried again in place, with a pause,
and the action is not. A claim whose commit was cut off is recognised on the next try
instead of being taken for someone else's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from django.db import OperationalError, connection, connections
from django.utils import timezone

from schedules import services
from schedules.models import Run, RunStatus, Step, StepState
from schedules.services import execution
from workers.actions import register
from workers.actions.base import REGISTRY
from workers.actions.noop import NoopPayload

pytestmark = pytest.mark.django_db(transaction=True)

EFFECTS: list[int] = []


@pytest.fixture
def counted() -> Any:
    """An action that counts its runs and, while it runs, calls the test's hook."""
    hooks: list[Any] = []

    @register("counted", payload=NoopPayload, description="test")
    def counted(ctx: Any, payload: Any) -> dict[str, Any]:
        EFFECTS.append(ctx.step_id)
        for hook in hooks:
            hook()
        return {"effects": len(EFFECTS)}

    EFFECTS.clear()
    yield hooks
    REGISTRY.pop("counted")


def cut_the_worker_s_database_connection() -> None:
    """PostgreSQL: terminate this connection's server process from another connection.
    SQLite: another connection holds the write lock for 0.5 s while this one waits 50 ms."""
    if connection.vendor == "postgresql":
        pid = connection.connection.info.backend_pid
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            other.close()
        return
    taken = threading.Event()

    def hold() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN IMMEDIATE")
                taken.set()
                time.sleep(0.5)
                cursor.execute("COMMIT")
        finally:
            other.close()

    threading.Thread(target=hold, daemon=True).start()
    assert taken.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 50")


def test_a_failed_record_is_retried_in_place_and_the_action_runs_once(counted, caplog):
    counted.append(cut_the_worker_s_database_connection)
    job = services.job_schedule(action="counted", due_at=timezone.now())
    step = job.steps.get()
    with caplog.at_level(logging.WARNING, logger="schedules.services.execution"):
        run = services.step_execute(step_id=step.pk, version=1)
    connection.close()  # (SQLite: the next connection has the configured busy timeout)
    assert [step.pk] == EFFECTS
    assert run.status == RunStatus.SUCCEEDED and run.result == {"effects": 1}
    assert [r.status for r in Run.objects.filter(step=step)] == [RunStatus.SUCCEEDED]
    step.refresh_from_db()
    assert step.state == StepState.SUCCEEDED and step.attempts == 1 and step.holder == ""
    retries = [
        r.getMessage() for r in caplog.records if "recording the run failed" in r.getMessage()
    ]
    assert retries, "the record was not retried"


def test_a_record_that_keeps_failing_gives_up_and_leaves_the_step_to_recovery(
    counted, monkeypatch, settings
):
    """After SCHEDULES_DB_RETRY_SECONDS the error propagates; the step stays running under
    its lease (a takeover follows if its worker is gone), and the action did not run again."""
    settings.SCHEDULES_DB_RETRY_SECONDS = 0.3
    job = services.job_schedule(action="counted", due_at=timezone.now())
    step = job.steps.get()

    def broken(*args: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(execution, "_finish", broken)
    with pytest.raises(OperationalError):
        services.step_execute(step_id=step.pk, version=1, worker="worker:test:1")
    assert [step.pk] == EFFECTS
    step.refresh_from_db()
    assert step.state == StepState.RUNNING and step.holder == "worker:test:1"


def test_a_claim_whose_commit_was_cut_off_is_recognised(counted, monkeypatch):
    """The claim committed but its answer was lost: the next try finds the step running
    under this worker's name and attempt, and goes on with that run."""
    job = services.job_schedule(action="counted", due_at=timezone.now())
    step = job.steps.get()
    real = execution._claim
    calls: list[int] = []

    def commit_then_lose_the_answer(*args: Any) -> Any:
        calls.append(1)
        run = real(*args)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return run

    monkeypatch.setattr(execution, "_claim", commit_then_lose_the_answer)
    monkeypatch.setattr(execution.time, "sleep", lambda seconds: None)
    run = services.step_execute(step_id=step.pk, version=1, worker="worker:test:1")
    assert calls == [1]  # recognised: not claimed a second time
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1
    assert [step.pk] == EFFECTS
    assert list(Run.objects.filter(step=step).values_list("status", flat=True)) == [
        RunStatus.SUCCEEDED
    ]
    assert Step.objects.get(pk=step.pk).attempts == 1
