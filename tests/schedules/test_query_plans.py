"""The dispatcher's queries seek their index whatever the table's statistics.

Right after a bulk load nothing has analysed the step table (autovacuum lags, or is
off), and a planner without statistics must still seek an index instead of reading
and sorting every pending step: the dispatcher runs these queries many times a
second. Each test runs the real functions, captures every statement they send, and
asks the database for its plan: first with no statistics at all, then after ANALYZE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone

from schedules import services
from schedules.models import Step, StepState

pytestmark = pytest.mark.django_db

STEP_TABLE = Step._meta.db_table
PENDING = 10_000  # far-future steps: enough that reading them all costs milliseconds


@pytest.fixture
def bulk_loaded() -> dt.datetime:
    """10,000 pending steps in bulk, a few due now, and no statistics on the table."""
    now = timezone.now()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Forget the statistics an earlier test's ANALYZE left behind (this deletion is
            # rolled back with the test), so the planner knows nothing but the table's size.
            cursor.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [STEP_TABLE])
        else:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if cursor.fetchone()[0]:
                cursor.execute("DELETE FROM sqlite_stat1")
    far = [
        {"action": "noop", "due_at": now + dt.timedelta(hours=2, seconds=i)} for i in range(PENDING)
    ]
    services.job_schedule_many(jobs=far)
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 5)
    return now


Statement = tuple[str, tuple[object, ...]]


def plan_of(statement: Statement) -> str:
    sql, params = statement
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def step_statements(call: Callable[[], object]) -> list[Statement]:
    """The statements ``call`` sent that search the step table by its state, time or
    holder, with their parameters bound as they were (a planner may treat a literal
    differently). Reads and writes of rows by their ids are left out: how a planner
    fetches a hundred rows by key depends on the table's size, not on its statistics."""
    sent: list[Statement] = []

    def capture(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        where = sql.partition(" WHERE ")[2].lstrip("( ")
        if (
            STEP_TABLE in sql
            and where
            and not where.startswith((f'"{STEP_TABLE}"."id" IN', "id IN"))
            and sql.lstrip().upper().startswith(("SELECT", "UPDATE"))
        ):
            sent.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        call()
    return sent


def full_reads(plan: str) -> list[str]:
    """Lines of a plan that read the whole step table or sort what they read."""
    bad = []
    for line in plan.splitlines():
        if connection.vendor == "postgresql":
            if f"Seq Scan on {STEP_TABLE}" in line or "Sort" in line:
                bad.append(line)
        elif (line.startswith("SCAN") and STEP_TABLE in line) or "TEMP B-TREE" in line:
            bad.append(line)
    return bad


def dispatcher_queries(now: dt.datetime) -> dict[str, Callable[[], object]]:
    return {
        "next due": services.steps_next_due_at,
        "claim": lambda: services.steps_claim_due(limit=100, holder="d:1:1", lease=5),
        "arm sweep": lambda: services.steps_arm_pending(now=now, limit=100),
        "overdue on engines": lambda: services.steps_release_overdue(now=now, limit=100),
        "recovery": lambda: services.steps_recover(now=now, queue_empty=lambda: True),
    }


def assert_seeks(now: dt.datetime) -> None:
    checked = 0
    for name, call in dispatcher_queries(now).items():
        for statement in step_statements(call):
            plan = plan_of(statement)
            assert not full_reads(plan), f"{name}: {statement}\n{plan}"
            checked += 1
    assert checked >= 5


def test_the_dispatcher_seeks_its_index_without_statistics(bulk_loaded, published):
    # The dispatcher's most frequent query, in full: one index, no sort.
    (statement,) = step_statements(services.steps_next_due_at)
    assert "step_state_engine_due" in plan_of(statement)
    assert_seeks(bulk_loaded)
    # The queries ran for real: the claim took the five due steps.
    assert Step.objects.filter(state=StepState.QUEUED).count() == 5


def test_the_dispatcher_seeks_its_index_after_analyze(bulk_loaded, published):
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {STEP_TABLE}")
    assert_seeks(bulk_loaded)


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", sent.extend)
    return sent


# ---------------------------------------------------------------------------------------
# Owner links: indexed only where they hold a value (migration 0008). A row changes
# state several times a run and each change adds an entry to every index whose
# condition holds, so the links most rows leave empty are partial indexes, and a job's
# steps are found by the unique (job, sequence, poll_number) index. Finding an owner's
# rows, and deleting an owner (its rows go with it), must still seek an index.


def all_statements(call: Callable[[], object], tables: tuple[str, ...]) -> list[Statement]:
    """The SELECT, UPDATE and DELETE statements ``call`` sent that search ``tables`` by a
    column other than their id."""
    sent: list[Statement] = []

    def capture(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        head, _, where = sql.partition(" WHERE ")
        if (
            any(f'"{table}"' in head or f" {table} " in f"{head} " for table in tables)
            and where
            and '"id" IN' not in where.split(" AND ")[0]
            and sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
        ):
            sent.append((sql, tuple(params or ())))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        call()
    return sent


def table_reads(plan: str, table: str) -> list[str]:
    """Lines of a plan that read all of ``table``."""
    if connection.vendor == "postgresql":
        return [line for line in plan.splitlines() if f"Seq Scan on {table}" in line]
    return [
        line
        for line in plan.splitlines()
        if line.startswith("SCAN") and table in line and "USING" not in line
    ]


@pytest.fixture
def owners(bulk_loaded):  # type: ignore[no-untyped-def]
    """A user owning one job, a classroom with its steps and a run, among the 10,000 jobs
    with their steps and a run each (no statistics on the step table)."""
    from django.contrib.auth.models import User

    from schedules.models import Classroom, Job, Run

    user = User.objects.create(username="owner")
    job = services.job_schedule(action="noop", due_at=bulk_loaded + dt.timedelta(days=1))
    Job.objects.filter(pk=job.pk).update(owner=user)
    start = bulk_loaded + dt.timedelta(days=2)
    classroom = services.classroom_create(
        title="Owned",
        start=start,
        end=start + dt.timedelta(minutes=10),
        recording_service_ref="room-1",
        owner=user,
    )
    Run.objects.bulk_create(
        Run(
            step_id=step_id,
            job_id=job_id,
            action="noop",
            version=1,
            status="succeeded",
            due_at=due_at,
            started_at=due_at,
        )
        for step_id, job_id, due_at in Step.objects.filter(job__isnull=False).values_list(
            "pk", "job_id", "due_at"
        )
    )
    step = classroom.steps.first()
    assert step is not None
    Run.objects.create(
        step=step,
        classroom=classroom,
        action=step.action,
        version=step.version,
        status="succeeded",
        due_at=step.due_at,
        started_at=step.due_at,
    )
    assert Classroom.objects.count() == 1
    return user, job, classroom


def test_owner_links_seek_their_index(owners):
    from schedules.models import Job, Run

    user, job, classroom = owners
    lookups = {
        "steps of a job": (Step.objects.filter(job_id=job.pk), STEP_TABLE),
        "steps of a classroom": (Step.objects.filter(classroom_id=classroom.pk), STEP_TABLE),
        "runs of a classroom": (Run.objects.filter(classroom_id=classroom.pk), "schedules_run"),
        "jobs of an owner": (Job.objects.filter(owner_id=user.pk), "schedules_job"),
    }
    for name, (queryset, table) in lookups.items():
        plan = queryset.explain()
        assert not table_reads(plan, table), f"{name}:\n{plan}"
        assert queryset.exists(), name


def test_deleting_owners_seeks_their_rows(owners):
    from schedules.models import Classroom, Job, Run

    user, job, classroom = owners
    job_id = job.pk
    tables = (STEP_TABLE, "schedules_run", "schedules_job")
    checked = 0
    for call in (job.delete, classroom.delete, user.delete):
        statements = all_statements(call, tables)
        for sql, params in statements:
            plan = plan_of((sql, params))
            for table in tables:
                assert not table_reads(plan, table), f"{sql}\n{plan}"
            checked += 1
    assert checked >= 4
    # The deletions happened, and took only their own rows.
    assert not Job.objects.filter(pk=job_id).exists()
    assert not Step.objects.filter(job_id=job_id).exists()
    assert not Classroom.objects.exists()
    assert not Step.objects.filter(classroom__isnull=False).exists()
    assert not Run.objects.filter(classroom__isnull=False).exists()
    assert Step.objects.filter(job__isnull=False).count() == PENDING + 5
    assert Run.objects.count() == PENDING + 5
