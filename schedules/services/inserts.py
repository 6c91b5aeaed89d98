"""New jobs and their first steps, written in as few statements as the database allows.

Scheduling is the product's front door: a web request or a program calling
``job_schedule`` in a loop waits on it, and a bulk import of a million jobs
waits on ``job_schedule_many``. Django's ``create`` and ``bulk_create`` cost
more in building SQL than the database spends running it, so the statements are
built here once per model, from the model's own fields and defaults:

- one job (``job_and_step_insert``): on PostgreSQL one statement, the job's
  INSERT in a WITH clause and its step's INSERT below it, run as its own
  transaction when no transaction is open (one round trip, one commit); on
  SQLite one write transaction of two INSERTs.
- many jobs (``jobs_and_steps_insert``): on PostgreSQL the ids are taken from
  the tables' sequences in one statement and the rows are written with COPY;
  on SQLite, inside the write transaction, ids follow the table's last id and
  the rows are written with ``executemany``.

A step whose engine's timer is the row itself (local) is written armed when it
falls within the arm horizon and the dispatchers are woken once, in the same
transaction (PostgreSQL delivers the NOTIFY at the commit); steps of other
engines are synced with their engine after the commit.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, models
from django.utils import timezone

from ..engines import engine_name_for_precision
from ..engines.local import WAKE_CHANNEL
from ..models import ArmState, Job, ScheduleType, Step
from .leases import placeholders
from .plans import written_armed
from .sync import steps_sync_on_commit
from .transactions import run_retrying


class Table:
    """A model's columns in a fixed order (every concrete field but the id), their
    defaults, and how a value is written to this database."""

    def __init__(self, model: type[models.Model]) -> None:
        self.model = model
        self.name = model._meta.db_table
        self.fields: list[models.Field[Any, Any]] = [
            field for field in model._meta.concrete_fields if not field.primary_key
        ]
        self.columns: list[str] = [str(field.column) for field in self.fields]
        self.attnames = [field.attname for field in self.fields]

    def defaults(self, now: dt.datetime) -> dict[str, Any]:
        """Every column's value when none is given: the field's default; now for the
        ``auto_now`` and ``auto_now_add`` timestamps."""
        values = dict(self._constant_defaults)
        for name, default in self._callable_defaults:
            values[name] = default()
        for name in self._stamps:
            values[name] = now
        return values

    @functools.cached_property
    def _stamps(self) -> list[str]:
        return [
            field.attname
            for field in self.fields
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        ]

    @functools.cached_property
    def _callable_defaults(self) -> list[tuple[str, Callable[[], Any]]]:
        return [
            (f.attname, f.default) for f in self.fields if f.has_default() and callable(f.default)
        ]

    @functools.cached_property
    def _constant_defaults(self) -> dict[str, Any]:
        return {
            f.attname: f.get_default()
            for f in self.fields
            if not (f.has_default() and callable(f.default)) and f.attname not in self._stamps
        }

    @functools.cached_property
    def writer(self) -> Callable[[dict[str, Any]], list[Any]]:
        """A function from {attname: value} to the row's values as this database takes
        them. Values arrive validated and of their field's type, so only two kinds are
        converted: JSON, written as its text (both databases take it in an INSERT and
        in COPY), and on SQLite datetimes, as Django's backend writes them."""
        convert: dict[str, Callable[[Any], Any]] = {}
        for field in self.fields:
            if isinstance(field, models.JSONField):
                convert[field.attname] = _json_text
            elif isinstance(field, models.DateTimeField) and connection.vendor == "sqlite":
                convert[field.attname] = connection.ops.adapt_datetimefield_value
            elif not isinstance(field, _TAKEN_AS_THEY_ARE):
                raise TypeError(f"{self.name}.{field.column}: no writer for {type(field)}")
        names = self.attnames
        return lambda values: [
            convert[name](values[name]) if name in convert else values[name] for name in names
        ]


#: Fields whose validated Python values both databases' drivers take as they are.
_TAKEN_AS_THEY_ARE = (
    models.CharField,
    models.TextField,
    models.IntegerField,
    models.BooleanField,
    models.DateTimeField,
    models.ForeignKey,
)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


@functools.cache
def table(model: type[models.Model]) -> Table:
    return Table(model)


def _json_cast(tab: Table) -> list[str]:
    """PostgreSQL reads a JSON column's text parameter as jsonb only if told so."""
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    return [f"%s{cast}" if isinstance(field, models.JSONField) else "%s" for field in tab.fields]


def step_for(job: Job, due_at: dt.datetime, now: dt.datetime) -> dict[str, Any]:
    """The values of ``job``'s first step (occurrence 0), armed if its engine's timer
    is the row and it falls within the horizon."""
    values = table(Step).defaults(now)
    name = engine_name_for_precision(job.precision)
    values.update(
        job_id=job.pk,
        action=job.action,
        due_at=due_at,
        precision=job.precision,
        engine=name,
        max_attempts=job.max_attempts,
        recurring=job.schedule_type != ScheduleType.ONCE,
    )
    if written_armed(name, due_at, now):
        values.update(
            arm_state=ArmState.ARMED.value, armed_version=1, armed_engine=name, armed_at=now
        )
    return values


def _saved(job: Job, pk: int) -> Job:
    job.pk = pk
    job._state.adding = False
    job._state.db = connection.alias
    return job


def _after_write(steps: Sequence[dict[str, Any]], ids: Sequence[int]) -> None:
    """Wake the dispatchers once for steps written armed; sync the others' engines
    after the commit."""
    armed = [values for values in steps if values["arm_state"] == ArmState.ARMED]
    if armed and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [WAKE_CHANNEL])
    steps_sync_on_commit(
        pk for pk, values in zip(ids, steps, strict=True) if values["arm_state"] != ArmState.ARMED
    )


def job_and_step_insert(job: Job, due_at: dt.datetime) -> Job:
    """Write ``job`` (unsaved, its fields set) and its first step due at ``due_at``.

    Returns ``job`` with its id. Outside a transaction, on PostgreSQL, this is one
    statement and its own transaction; inside one, it joins it.
    """
    now = timezone.now()
    job.created_at = job.updated_at = now
    jobs, steps = table(Job), table(Step)
    job_row = jobs.writer({name: getattr(job, name) for name in jobs.attnames})
    step_values = step_for(job, due_at, now)
    if connection.vendor != "postgresql":

        def write() -> int:
            with connection.cursor() as cursor:
                cursor.execute(_insert_sql(Job), job_row)
                job_id: int = cursor.fetchone()[0]
                step_values["job_id"] = job_id
                cursor.execute(_insert_sql(Step), steps.writer(step_values))
                step_id: int = cursor.fetchone()[0]
            _after_write([step_values], [step_id])
            return job_id

        return _saved(job, run_retrying(write, what="job_schedule"))
    step_values["job_id"] = 0  # replaced by the job's id in the statement
    step_row = steps.writer(step_values)
    job_column = steps.attnames.index("job_id")
    armed = step_values["arm_state"] == ArmState.ARMED
    sql = _job_and_step_sql(armed)
    params = [*job_row, *(v for i, v in enumerate(step_row) if i != job_column)]
    params += [WAKE_CHANNEL] if armed else []

    def write_one() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            step_id, job_id = cursor.fetchone()[:2]
        return step_id, job_id

    if connection.in_atomic_block:
        step_id, job_id = write_one()
    else:
        step_id, job_id = run_retrying(write_one, what="job_schedule", atomic=False)
    if not armed:
        steps_sync_on_commit([step_id])
    return _saved(job, job_id)


@functools.cache
def _job_and_step_sql(armed: bool) -> str:
    """PostgreSQL: the job's INSERT in a WITH clause, its step's below it, taking the
    job's id; with a NOTIFY to the dispatchers if the step is written armed."""
    steps = table(Step)
    job_column = steps.attnames.index("job_id")
    return (
        f"WITH j AS ({_insert_sql(Job)}) "
        f"INSERT INTO {steps.name} ({', '.join(steps.columns)}) VALUES ("
        + ", ".join(
            "(SELECT id FROM j)" if index == job_column else placeholder
            for index, placeholder in enumerate(_json_cast(steps))
        )
        + ") RETURNING id, job_id"
        + (", pg_notify(%s, '')" if armed else "")
    )


@functools.cache
def _insert_sql(model: type[Job | Step]) -> str:
    """One row of ``model`` (every column but the id), returning its id."""
    tab = table(model)
    return (
        f"INSERT INTO {tab.name} ({', '.join(tab.columns)}) "
        f"VALUES ({', '.join(_json_cast(tab))}) RETURNING id"
    )


def jobs_and_steps_insert(jobs: list[Job], due: list[dt.datetime]) -> list[Job]:
    """Write many unsaved jobs and their first steps (``due[i]`` for ``jobs[i]``) in
    the caller's transaction; returns the jobs with their ids."""
    assert connection.in_atomic_block, "jobs_and_steps_insert runs inside a transaction"
    if not jobs:
        return []
    now = timezone.now()
    job_ids, step_ids = _new_ids(len(jobs))
    job_table, step_table = table(Job), table(Step)
    job_writer, step_writer = job_table.writer, step_table.writer
    job_rows: list[list[Any]] = []
    step_values: list[dict[str, Any]] = []
    for job, job_id, when in zip(jobs, job_ids, due, strict=True):
        job.created_at = job.updated_at = now
        _saved(job, job_id)
        job_rows.append([job_id, *job_writer({n: getattr(job, n) for n in job_table.attnames})])
        step_values.append(step_for(job, when, now))
    step_rows = [[pk, *step_writer(v)] for pk, v in zip(step_ids, step_values, strict=True)]
    _write_rows(job_table, job_rows)
    _write_rows(step_table, step_rows)
    _after_write(step_values, step_ids)
    return jobs


def _new_ids(count: int) -> tuple[list[int], list[int]]:
    """``count`` new ids for jobs and as many for steps, never used before."""
    jobs, steps = table(Job), table(Step)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')), "
                "nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [jobs.name, steps.name, count],
            )
            pairs = cursor.fetchall()
            return [job for job, _ in pairs], [step for _, step in pairs]
        # SQLite, inside the write transaction (BEGIN IMMEDIATE): nobody else writes.
        # AUTOINCREMENT never reuses an id up to sqlite_sequence's, which follows
        # the explicit ids written here.
        firsts = []
        for name in (jobs.name, steps.name):
            cursor.execute(
                f"SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM {name} UNION ALL "
                "SELECT seq FROM sqlite_sequence WHERE name = %s)",
                [name],
            )
            firsts.append((cursor.fetchone()[0] or 0) + 1)
    return (
        list(range(firsts[0], firsts[0] + count)),
        list(range(firsts[1], firsts[1] + count)),
    )


def _write_rows(tab: Table, rows: list[list[Any]]) -> None:
    """Rows that start with their id: COPY on PostgreSQL, ``executemany`` elsewhere."""
    columns = ", ".join(["id", *tab.columns])
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {tab.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        cursor.executemany(
            f"INSERT INTO {tab.name} ({columns}) VALUES ({placeholders(len(tab.columns) + 1)})",
            rows,
        )
