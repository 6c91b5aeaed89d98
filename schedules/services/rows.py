"""Plain SQL for the rows the worker reads and writes on every step it runs.

Building an ORM query costs more than running it, and the worker's path must
sustain hundreds of steps per second on a small machine (docs/benchmarks.md),
so the statements it runs per step are written out once, here and in
``execution``. They are plain SQL that SQLite and PostgreSQL both run, take
their table names from the models, and adapt values through the models' own
fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from django.db import connection, models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..models import PAUSE_REASON_MAX, Job, PlanStatus, Run, Step

JOB_TABLE = Job._meta.db_table


def to_db(model: type[Job | Run | Step], field: str, value: Any) -> Any:
    """``value`` as the model's field writes it to this database."""
    column = model._meta.get_field(field)
    assert isinstance(column, models.Field)
    return column.get_db_prep_value(value, connection)


def from_db_datetime(value: Any) -> dt.datetime | None:
    """A datetime column's value: aware UTC (SQLite hands back text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_datetime(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def json_from_db(raw: Any) -> dict[str, Any]:
    """A JSON column's value: SQLite (and Django's psycopg setup) hand back text."""
    value = json.loads(raw) if isinstance(raw, str | bytes) else raw
    assert isinstance(value, dict)
    return value


@dataclasses.dataclass
class JobPlan:
    """What the worker reads of a recurring or polling job to plan its next step (never
    its payload), and the counters it writes back with ``job_plan_save``."""

    pk: int
    action: str
    precision: str
    max_attempts: int
    status: str
    due_at: dt.datetime
    time_zone: str
    last_sequence: int
    run_count: int
    schedule_type: str
    rate_every: int | None
    rate_unit: str
    cron: str
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    max_runs: int | None
    missed_policy: str
    overlap_policy: str
    pause_after_failures: int | None = None
    consecutive_failures: int = 0
    #: Not a column: why the job pauses itself, set by ``plans.step_settled`` and saved by
    #: ``job_plan_save`` (as ``pause_reason``, with ``paused_at``).
    pausing: str = dataclasses.field(default="", metadata={"column": False})


PLAN_COLUMNS = [f.name for f in dataclasses.fields(JobPlan) if f.metadata.get("column", True)]
PLAN_DATETIMES = {"due_at", "starts_at", "ends_at"}


def job_plan_lock(job_id: int) -> JobPlan:
    """The job's plan, its row locked until the transaction ends (on PostgreSQL; SQLite's
    write transaction already excludes other writers)."""
    columns = ", ".join("id" if name == "pk" else name for name in PLAN_COLUMNS)
    sql = f"SELECT {columns} FROM {JOB_TABLE} WHERE id = %s"
    if connection.features.has_select_for_no_key_update:
        sql += " FOR NO KEY UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [job_id])
        row = cursor.fetchone()
    values: dict[str, Any] = {
        name: from_db_datetime(value) if name in PLAN_DATETIMES else value
        for name, value in zip(PLAN_COLUMNS, row, strict=True)
    }
    return JobPlan(**values)


#: Statuses a job keeps whatever its steps do next, unless it ends: cancelled, paused.
HELD_STATUSES = (PlanStatus.CANCELLED.value, PlanStatus.PAUSED.value)


def kept_statuses(status: str) -> tuple[str, str]:
    """The job statuses that ``status`` does not overwrite: a cancelled job stays
    cancelled; a paused one stays paused unless ``status`` ends it (succeeded, failed)."""
    if status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING):
        return HELD_STATUSES
    return (PlanStatus.CANCELLED.value, PlanStatus.CANCELLED.value)


def job_plan_save(plan: JobPlan, status: str) -> None:
    """Write the plan's status, due time and counters; a cancelled job stays cancelled, a
    paused one paused unless it ends. A plan that pauses itself (``pausing``) is saved
    paused, with when and why."""
    now = timezone.now()
    if plan.pausing and status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING):
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {JOB_TABLE} SET paused_at = %s, pause_reason = %s "
                "WHERE id = %s AND status NOT IN (%s, %s)",
                [
                    to_db(Job, "paused_at", now),
                    plan.pausing[:PAUSE_REASON_MAX],
                    plan.pk,
                    *HELD_STATUSES,
                ],
            )
            if cursor.rowcount:
                status = PlanStatus.PAUSED
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {JOB_TABLE} SET status = CASE WHEN status IN (%s, %s) THEN status "
            "ELSE %s END, due_at = %s, run_count = %s, last_sequence = %s, "
            "consecutive_failures = %s, updated_at = %s WHERE id = %s",
            [
                *kept_statuses(status),
                PlanStatus(status).value,
                to_db(Job, "due_at", plan.due_at),
                plan.run_count,
                plan.last_sequence,
                plan.consecutive_failures,
                to_db(Job, "updated_at", now),
                plan.pk,
            ],
        )
