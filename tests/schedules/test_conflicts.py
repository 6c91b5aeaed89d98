"""A conflict the database still reports is retried inside the service (invariant 8).

The conflicts here are the database's own: on PostgreSQL a real deadlock (another
transaction locks a step, then the job, against the lock order) or a trigger that
raises ``deadlock_detected``; on SQLite a writer that holds the database's write lock
past the busy timeout. A caller sees the result, or a clean "busy" error with nothing
written (API: 503 with Retry-After; commands: an error line), never an OperationalError.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, Step, StepState
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = "postgresql"


def later(minutes: int = 10) -> dt.datetime:
    return timezone.now() + dt.timedelta(minutes=minutes)


@contextmanager
def write_lock_held(seconds: float) -> Iterator[None]:
    """SQLite: another connection holds the write lock for ``seconds``, while this
    connection gives up on a lock after 50 ms."""
    taken = threading.Event()

    def hold() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN IMMEDIATE")
                taken.set()
                time.sleep(seconds)
                cursor.execute("COMMIT")
        finally:
            other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 50")
    try:
        yield
    finally:
        thread.join(seconds + 10)
        connection.close()  # the next connection has the configured timeout again


@contextmanager
def deadlocks_on_job_update(times: int) -> Iterator[None]:
    """PostgreSQL: the next ``times`` updates of a job raise the server's deadlock_detected."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE SEQUENCE test_conflicts_seq;
            CREATE FUNCTION test_conflicts_raise() RETURNS trigger AS $$
            BEGIN
                IF nextval('test_conflicts_seq') <= {int(times)} THEN
                    RAISE EXCEPTION 'deadlock detected (test)' USING ERRCODE = 'deadlock_detected';
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_conflicts BEFORE UPDATE ON {Job._meta.db_table}
                FOR EACH ROW EXECUTE FUNCTION test_conflicts_raise();
            """
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                f"DROP TRIGGER test_conflicts ON {Job._meta.db_table}; "
                "DROP FUNCTION test_conflicts_raise(); DROP SEQUENCE test_conflicts_seq;"
            )


@contextmanager
def persistent_conflict() -> Iterator[None]:
    """Every try of a job's change meets a conflict, on either database."""
    if connection.vendor == POSTGRES:
        with deadlocks_on_job_update(1000):
            yield
    else:
        with write_lock_held(3):
            yield


def test_a_real_deadlock_is_retried_inside_the_service(caplog):
    """Another transaction takes a step, then its job (against the lock order) while a
    cancel holds the job and waits for the step. The database aborts one of them; the
    cancel, if it is the one, runs again and succeeds. On SQLite, a writer holds the
    lock past the busy timeout and the cancel's retry gets it once it is free."""
    job = services.job_schedule(action="noop", due_at=later())
    step = job.steps.get()
    if connection.vendor == POSTGRES:
        other_waits_on_job = threading.Event()

        def against_the_order() -> None:
            other = connections.create_connection("default")
            try:
                with other.cursor() as cursor:
                    cursor.execute("SET deadlock_timeout = '10s'")  # the cancel detects it
                    cursor.execute("BEGIN")
                    cursor.execute(
                        f"UPDATE {Step._meta.db_table} SET attempts = 0 WHERE id = %s", [step.pk]
                    )
                    ready.set()
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:  # until the cancel waits for the step
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND datname = current_database()"
                        )
                        if cursor.fetchone()[0]:
                            break
                        time.sleep(0.02)
                    other_waits_on_job.set()
                    cursor.execute(
                        f"UPDATE {Job._meta.db_table} SET name = 'x' WHERE id = %s", [job.pk]
                    )
                    cursor.execute("COMMIT")
            finally:
                other.close()

        ready = threading.Event()
        thread = threading.Thread(target=against_the_order)
        thread.start()
        assert ready.wait(10)
        with caplog.at_level(logging.WARNING, logger="schedules.services.transactions"):
            services.job_cancel(job=job)
        thread.join(20)
        assert other_waits_on_job.is_set()
        retried = [r.getMessage() for r in caplog.records]
        assert (
            retried and "job_cancel: deadlock reported by the database (try 1 of 5)" in (retried[0])
        )
    else:
        with (
            caplog.at_level(logging.WARNING, logger="schedules.services.transactions"),
            write_lock_held(0.3),
        ):
            services.job_cancel(job=job)
        assert "job_cancel: lock timeout reported by the database (try 1 of 5)" in (
            caplog.records[0].getMessage()
        )
    job.refresh_from_db()
    step.refresh_from_db()
    assert job.status == PlanStatus.CANCELLED and step.state == StepState.CANCELLED


def test_a_conflict_that_persists_is_busy_and_nothing_is_written(settings):
    settings.SCHEDULES_CONFLICT_RETRIES = 3
    job = services.job_schedule(action="noop", due_at=later())
    with persistent_conflict(), pytest.raises(services.Busy) as caught:
        services.job_reschedule(job=job, due_at=later(30))
    assert caught.value.attempts == 3
    assert "nothing was changed. Try again in a moment." in str(caught.value)
    job.refresh_from_db()
    step = job.steps.get()
    assert step.version == 1 and job.due_at < later(20)


def test_the_api_answers_503_with_retry_after_and_writes_nothing(settings):
    settings.SCHEDULES_CONFLICT_RETRIES = 2
    alice = User.objects.create_user("alice", password="pw-alice-1234")
    job = services.job_schedule(action="noop", due_at=later(), owner=alice)
    api = client_for(alice)
    with persistent_conflict():
        response = api.patch(
            f"/api/jobs/{job.pk}/",
            {"name": "renamed", "due_at": later(30).isoformat()},
            format="json",
        )
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "1"
    body = response.json()
    assert body["code"] == "busy" and "nothing was changed" in body["detail"]
    job.refresh_from_db()
    assert job.name == "" and job.steps.get().version == 1


def test_a_command_says_the_database_is_busy(settings):
    settings.SCHEDULES_CONFLICT_RETRIES = 2
    job = services.job_schedule(action="noop", due_at=later())
    with persistent_conflict(), pytest.raises(CommandError) as caught:
        call_command("cancel_job", str(job.pk))
    assert f"job {job.pk}: database: the database reported a" in str(caught.value)
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED
