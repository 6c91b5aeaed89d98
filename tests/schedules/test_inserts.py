"""Scheduling writes its rows by hand (services.inserts): the rows are the ones Django
would write, ids never collide, and the statements are as few as promised."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from schedules import services
from schedules.engines.local import WAKE_CHANNEL
from schedules.models import ArmState, Job, Step

pytestmark = pytest.mark.django_db(transaction=True)

SKIP = {"id", "created_at", "updated_at", "job", "job_id"}


def columns(obj: Job | Step) -> dict[str, Any]:
    return {
        f.attname: getattr(obj, f.attname)
        for f in type(obj)._meta.concrete_fields
        if f.attname not in SKIP
    }


def test_a_recurring_job_and_its_step_are_the_rows_the_orm_writes(now):
    starts = now + dt.timedelta(minutes=5)
    job = services.job_schedule(
        action="noop",
        payload={},
        name="every hour",
        time_zone="Europe/Paris",
        schedule_type="rate",
        rate_every=1,
        rate_unit="hours",
        starts_at=starts,
        max_runs=10,
        missed_policy="skip",
        overlap_policy="allow",
    )
    stored = Job.objects.get(pk=job.pk)
    reference = Job.objects.create(**columns(stored))
    reference.refresh_from_db()
    assert columns(stored) == columns(reference)
    assert columns(job) == columns(stored)  # the returned instance is the stored row
    assert stored.created_at == stored.updated_at and stored.created_at >= now
    step = stored.steps.get()
    expected = Step(
        job=reference,
        action="noop",
        due_at=starts,
        precision=stored.precision,
        engine="local",
        max_attempts=stored.max_attempts,
        recurring=True,
        arm_state=ArmState.ARMED,
        armed_version=1,
        armed_engine="local",
        armed_at=step.armed_at,
    )
    assert step.armed_at is not None and step.armed_at >= now
    expected.save()
    expected.refresh_from_db()
    assert columns(step) == columns(expected)


def test_a_step_beyond_the_horizon_is_written_unarmed(settings, now):
    settings.SCHEDULES_ARM_HORIZON = 60
    job = services.job_schedule(action="noop", due_at=now + dt.timedelta(minutes=5))
    step = job.steps.get()
    assert step.arm_state == ArmState.UNARMED and step.armed_version is None


@pytest.mark.parametrize("body", ["é \\ \t \n ' \" \x01 , {} \\N", "plain"])
def test_payloads_survive_both_paths(now, body):
    """COPY's text format and SQLite's executemany keep every character of the JSON."""
    due = now + dt.timedelta(minutes=1)
    one = services.email_schedule(to=["a@example.com"], subject="s", body=body, due_at=due)
    many = services.job_schedule_many(
        jobs=[{"action": "send_email", "payload": one.payload, "due_at": due}]
    )
    assert Job.objects.get(pk=one.pk).payload == one.payload
    assert Job.objects.get(pk=many[0].pk).payload == one.payload


def test_ids_never_collide_between_bulk_one_by_one_and_the_orm(now):
    due = now + dt.timedelta(minutes=1)
    first = services.job_schedule_many(jobs=[{"action": "noop", "due_at": due}] * 3)
    single = services.job_schedule(action="noop", due_at=due)
    Job.objects.filter(pk=first[-1].pk).delete()  # AUTOINCREMENT never reuses it
    second = services.job_schedule_many(
        jobs=[{"action": "noop", "due_at": due + dt.timedelta(seconds=s)} for s in range(2)]
    )
    orm = Job.objects.create(action="noop", due_at=due)
    ids = [job.pk for job in [*first, single, *second, orm]]
    assert len(set(ids)) == len(ids)
    assert first[-1].pk not in Job.objects.values_list("pk", flat=True)
    assert min(job.pk for job in second) > max(job.pk for job in first)
    for job in [*first[:-1], single, *second]:
        step = Step.objects.get(job_id=job.pk)
        assert step.due_at == job.due_at == Job.objects.get(pk=job.pk).due_at
        assert step.arm_state == ArmState.ARMED
    assert Step.objects.count() == 5


def test_one_job_is_one_statement_on_postgresql_and_two_inserts_on_sqlite(now):
    with CaptureQueriesContext(connection) as queries:
        services.job_schedule(action="noop", due_at=now + dt.timedelta(minutes=1))
    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        assert len(statements) == 1, statements
        assert "pg_notify" in statements[0]
    else:
        assert [s.split()[0] for s in statements if s.startswith("INSERT")] == ["INSERT"] * 2


def test_one_job_joins_the_callers_transaction(now):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.job_schedule(action="noop", due_at=now + dt.timedelta(minutes=1))
        raise RuntimeError("the caller fails after scheduling")
    assert not Job.objects.exists() and not Step.objects.exists()


def test_bulk_costs_the_same_statements_for_5_or_500_jobs_and_wakes_once(now):
    def statements(count: int) -> list[str]:
        due = now + dt.timedelta(minutes=1)
        with CaptureQueriesContext(connection) as queries:
            services.job_schedule_many(jobs=[{"action": "noop", "due_at": due}] * count)
        return [q["sql"] for q in queries.captured_queries]

    few, many = statements(5), statements(500)
    assert len(few) == len(many)
    assert len(few) <= 6, few
    if connection.vendor == "postgresql":
        assert sum("pg_notify" in sql for sql in many) == 1
        assert not any(sql.startswith("INSERT") for sql in many)  # COPY, on the raw cursor
    assert Step.objects.filter(arm_state=ArmState.ARMED).count() == 505


def test_an_invalid_bulk_writes_nothing_and_uses_no_id(now):
    due = now + dt.timedelta(minutes=1)
    before = services.job_schedule(action="noop", due_at=due)
    with pytest.raises(Exception, match=r"jobs\[1\]\.due_at"):
        services.job_schedule_many(jobs=[{"action": "noop", "due_at": due}, {"action": "noop"}])
    after = services.job_schedule(action="noop", due_at=due)
    assert Job.objects.count() == 2 and Step.objects.count() == 2
    assert after.pk > before.pk


def test_the_wake_up_reaches_a_sleeping_dispatcher(now):
    """PostgreSQL: a NOTIFY per commit on the dispatchers' channel. SQLite: the commit
    itself, seen by another connection as a new PRAGMA data_version."""
    if connection.vendor == "sqlite":
        import sqlite3

        other = sqlite3.connect(connection.settings_dict["NAME"])
        try:
            seen = [other.execute("PRAGMA data_version").fetchone()[0]]
            services.job_schedule(action="noop", due_at=now + dt.timedelta(seconds=30))
            seen.append(other.execute("PRAGMA data_version").fetchone()[0])
            services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 3)
            seen.append(other.execute("PRAGMA data_version").fetchone()[0])
        finally:
            other.close()
        assert seen[0] < seen[1] < seen[2]
        return
    import psycopg

    params = connection.get_connection_params()
    listener = psycopg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
    )
    try:
        listener.execute(f"LISTEN {WAKE_CHANNEL}")
        services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(seconds=30))
        services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 3)
        got = [n.channel for n in listener.notifies(timeout=2.0, stop_after=2)]
    finally:
        listener.close()
    assert got == [WAKE_CHANNEL, WAKE_CHANNEL]
