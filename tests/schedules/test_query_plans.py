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
