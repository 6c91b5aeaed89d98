"""Reads for the admin's overview page (schedules/admin/overview.py) and /metrics.

Every function here is read-only and answers from indexes in a bounded time on tables
of millions of rows, on SQLite and on PostgreSQL alike (tests/schedules/
test_admin_overview.py checks their plans on both; bench/admin_scale.py times them
with 1,000,000 runs and 1,000,000 steps, docs/benchmarks.md). Each docstring names the
index it relies on.

Counts per time bucket are one statement of scalar ``COUNT(*)`` subqueries, one per
bucket, each a range on an indexed column whose index holds every column the
subquery reads: the database counts index entries and never computes an expression
per row (grouping by a time expression makes SQLite evaluate it for every row in
the window, several times slower on a busy day).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Substr

from .models import (
    PENDING_STATES,
    Heartbeat,
    ProcessRole,
    Run,
    RunStatus,
    Step,
    StepState,
)
from .services.heartbeats import heartbeat_problem

#: The windows each chart offers: (window, bucket).
LATENESS_WINDOWS = {
    "1h": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=1)),
}
UPCOMING_WINDOWS = {
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=10)),
    "7d": (dt.timedelta(days=7), dt.timedelta(hours=1)),
}
RUNS_WINDOWS = {
    "24h": (dt.timedelta(hours=24), dt.timedelta(hours=1)),
}
#: Run statuses listed as failures: final failures and attempts whose worker was lost.
FAILURE_STATUSES = (RunStatus.FAILED, RunStatus.ABANDONED)
#: Rows each list of problem runs shows (the newest).
PROBLEM_ROWS = 20
#: Characters of a run's error shown in a list.
ERROR_CHARS = 200


@dataclass(frozen=True)
class Bucket:
    """One bar of a chart: rows whose time is in ``[start, end)``, shown at ``at`` (the
    bucket's aligned start; the first and last buckets of a window may be partial)."""

    at: dt.datetime
    start: dt.datetime
    end: dt.datetime


def buckets(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> list[Bucket]:
    """``[start, end)`` cut at every multiple of ``size`` since the epoch (UTC)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    aligned = epoch + (start - epoch) // size * size
    cuts = [start]
    edge = aligned + size
    while edge < end:
        cuts.append(edge)
        edge += size
    cuts.append(end)
    return [
        Bucket(at=epoch + (lo - epoch) // size * size, start=lo, end=hi)
        for lo, hi in itertools.pairwise(cuts)
    ]


def _bucket_counts(
    *,
    table: str,
    column: str,
    where: str,
    params_per_series: Sequence[Sequence[str]],
    cuts: Sequence[Bucket],
) -> list[list[int]]:
    """COUNT(*) of ``table`` rows matching ``where`` in each bucket, for each series of
    parameters of ``where``, in one statement.

    One scalar subquery per series and bucket: ``where`` plus a range on ``column``. With
    an index on (the columns of ``where``, ``column``) each is a range count over that
    index alone (SQLite: a covering index; PostgreSQL: an index-only scan).
    """
    if not cuts or not params_per_series:
        return [[] for _ in params_per_series]
    one = (
        f"(SELECT COUNT(*) FROM {table} "  # noqa: S608  (names from the models; values bound)
        f"WHERE {where} AND {column} >= %s AND {column} < %s)"
    )
    adapt = connection.ops.adapt_datetimefield_value
    args: list[Any] = []
    for params in params_per_series:
        for cut in cuts:
            args.extend([*params, adapt(cut.start), adapt(cut.end)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join([one] * (len(params_per_series) * len(cuts))), args)
        answer = cursor.fetchone()
    assert answer is not None  # (one row: a SELECT of scalar subqueries)
    row = [int(n) for n in answer]
    return [row[i * len(cuts) : (i + 1) * len(cuts)] for i in range(len(params_per_series))]


# --- Lateness ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LatenessPoint:
    """An engine's runs started in one minute: nearest-rank p50 and p99, and the max,
    of the engine's own lateness in seconds."""

    at: dt.datetime
    runs: int
    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class EngineLatenessSeries:
    engine: str
    runs: int
    points: list[LatenessPoint]


def _lateness_sql() -> tuple[str, float]:
    """The window's attempts as (engine, minute number, lateness), sorted; and what the
    database's lateness is divided by to give seconds."""
    run = Run._meta.db_table
    if connection.vendor == "postgresql":
        # date_part is float8 (EXTRACT is numeric: slower to compute and to sort).
        bucket = "FLOOR(date_part('epoch', started_at) / %s)::bigint"
        value, per_second = "date_part('epoch', COALESCE(engine_lateness, lateness))", 1.0
    else:  # SQLite: times are UTC text, durations integer microseconds
        bucket = "CAST(strftime('%%s', started_at) AS INTEGER) / %s"
        value, per_second = "COALESCE(engine_lateness, lateness)", 1e6
    sql = (
        f"SELECT engine, {bucket} AS bucket, {value} AS value FROM {run} "  # noqa: S608
        "WHERE started_at >= %s AND started_at < %s AND status <> %s AND lateness IS NOT NULL "
        "ORDER BY engine, bucket, value"
    )
    return sql, per_second


def lateness_per_minute(
    *, window: dt.timedelta, bucket: dt.timedelta = dt.timedelta(minutes=1), now: dt.datetime
) -> list[EngineLatenessSeries]:
    """Each engine's own lateness per ``bucket`` over ``window`` up to ``now``: exact
    nearest-rank p50 and p99 (as ``selectors.lateness_by_engine``: the engine's lateness,
    or the lateness from the due time for runs recorded before it was kept; skipped
    deliveries are not attempts).

    One statement reads the window's attempts by a range on started_at (the index
    run_started, or run_engine_started one engine after the other) and sorts them by
    engine, minute and lateness; one pass over the sorted rows takes the ranks
    ceil(n/2) and ceil(0.99 n) of each minute. At 1,000,000 runs a month that is ~1,400
    rows for the hour and ~33,000 for the day. Ranking in SQL instead (ROW_NUMBER and
    COUNT OVER PARTITION BY engine, minute) gives the same numbers, as fast on
    PostgreSQL and twice as slow on SQLite, whose COUNT OVER a partition costs more
    than the rest of the query (docs/benchmarks.md, ``bench/admin_scale.py --compare``).
    """
    seconds = int(bucket.total_seconds())
    adapt = connection.ops.adapt_datetimefield_value
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    sql, per_second = _lateness_sql()
    series: dict[str, list[LatenessPoint]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [seconds, adapt(now - window), adapt(now), RunStatus.SKIPPED.value])
        rows = cursor.fetchall()
    for (engine, number), group in itertools.groupby(rows, key=lambda row: row[:2]):
        values = [row[2] for row in group]
        n = len(values)
        series.setdefault(engine, []).append(
            LatenessPoint(
                at=epoch + bucket * int(number),
                runs=n,
                p50=float(values[(n + 1) // 2 - 1]) / per_second,
                p99=float(values[(99 * n + 99) // 100 - 1]) / per_second,
                max=float(values[-1]) / per_second,
            )
        )
    return [
        EngineLatenessSeries(engine=engine, runs=sum(p.runs for p in points), points=points)
        for engine, points in sorted(series.items())
    ]


# --- Upcoming work and runs by status -----------------------------------------------------


def steps_upcoming(
    *, window: dt.timedelta, bucket: dt.timedelta, now: dt.datetime
) -> list[tuple[Bucket, int]]:
    """Steps still to run (scheduled or queued) due in each ``bucket`` of the next
    ``window``: range counts on the index step_state_due_id (state, due_at, id)."""
    cuts = buckets(now, now + window, bucket)
    (counts,) = _bucket_counts(
        table=Step._meta.db_table,
        column="due_at",
        where="state IN (%s, %s)",
        params_per_series=[[state.value for state in PENDING_STATES]],
        cuts=cuts,
    )
    return list(zip(cuts, counts, strict=True))


@dataclass(frozen=True)
class StatusSeries:
    status: str
    label: str
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)


def runs_by_status(
    *, window: dt.timedelta, bucket: dt.timedelta, now: dt.datetime
) -> tuple[list[Bucket], list[StatusSeries]]:
    """Runs started in each ``bucket`` of the last ``window``, per status: range counts
    on the index run_status_started (status, started_at), every status in one
    statement."""
    cuts = buckets(now - window, now, bucket)
    statuses = list(RunStatus)
    counts = _bucket_counts(
        table=Run._meta.db_table,
        column="started_at",
        where="status = %s",
        params_per_series=[[status.value] for status in statuses],
        cuts=cuts,
    )
    return cuts, [
        StatusSeries(status=status.value, label=str(status.label), counts=series)
        for status, series in zip(statuses, counts, strict=True)
    ]


# --- Problems: failed and uncertain runs --------------------------------------------------


@dataclass(frozen=True)
class ProblemRun:
    id: int
    status: str
    action: str
    engine: str
    started_at: dt.datetime
    job_id: int | None
    classroom_id: int | None
    execution_id: int | None
    step_id: int
    uncertain: bool
    error: str
    note: str


#: The columns a list of problem runs shows (the result and the full error stay behind).
PROBLEM_FIELDS = (
    "id",
    "status",
    "action",
    "engine",
    "started_at",
    "job_id",
    "classroom_id",
    "execution_id",
    "step_id",
    "uncertain",
    "note",
)


def _problem_rows(runs: Iterable[Run]) -> list[ProblemRun]:
    return [
        ProblemRun(
            id=run.pk,
            status=run.status,
            action=run.action,
            engine=run.engine,
            started_at=run.started_at,
            job_id=run.job_id,
            classroom_id=run.classroom_id,
            execution_id=run.execution_id,
            step_id=run.step_id,
            uncertain=run.uncertain,
            error=getattr(run, "error_head", None) or "",
            note=run.note,
        )
        for run in runs
    ]


def _problem_runs(condition: Q, limit: int) -> list[Run]:
    return list(
        Run.objects.filter(condition)
        .only(*PROBLEM_FIELDS)
        .annotate(error_head=Substr("error", 1, ERROR_CHARS))
        .order_by("-started_at")[:limit]
    )


def runs_failed_latest(*, limit: int = PROBLEM_ROWS) -> list[ProblemRun]:
    """The newest failed or abandoned runs: one backward seek of the index
    run_status_started (status, started_at) per status, merged."""
    runs = [run for status in FAILURE_STATUSES for run in _problem_runs(Q(status=status), limit)]
    runs.sort(key=lambda run: run.started_at, reverse=True)
    return _problem_rows(runs[:limit])


def runs_uncertain_latest(*, limit: int = PROBLEM_ROWS) -> list[ProblemRun]:
    """The newest uncertain runs (an earlier attempt was lost mid-run and may have had
    its effect): a backward seek of the partial index run_uncertain_started."""
    return _problem_rows(_problem_runs(Q(uncertain=True), limit))


# --- Backlog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueBacklog:
    engine: str
    count: int
    oldest_due_at: dt.datetime


def engines_with_steps(state: str) -> list[str]:
    """The engines of the steps in ``state``: one seek of the index step_state_engine_due
    (state, engine, due_at) per engine, each for the first engine after the last (a
    loose index scan)."""
    engines: list[str] = []
    while True:
        steps = Step.objects.filter(state=state)
        if engines:
            steps = steps.filter(engine__gt=engines[-1])
        engine = steps.order_by("engine").values_list("engine", flat=True).first()
        if engine is None:
            return engines
        engines.append(engine)


def steps_due_unreleased(*, now: dt.datetime) -> list[DueBacklog]:
    """Steps due by ``now`` that no engine has released yet, per engine, with the oldest
    due time.

    Seeks only, on the index step_state_engine_due (state, engine, due_at): the engines
    that have scheduled steps (``engines_with_steps``), then each one's entries up to now.
    Grouping the scheduled steps by engine instead reads every pending step (SQLite),
    or lets PostgreSQL, which cannot tell that few scheduled steps are due, read the
    due-time index over every past step (~100 ms at 1,000,000 steps). (One statement
    with a recursive query does the same seeks, but PostgreSQL's estimate of its cost
    is large enough to compile it first, 200 ms of JIT.)
    """
    rows = []
    for engine in engines_with_steps(StepState.SCHEDULED):
        due = Step.objects.filter(state=StepState.SCHEDULED, engine=engine, due_at__lte=now)
        answer = due.aggregate(count=Count("*"), oldest=Min("due_at"))
        if answer["count"]:
            rows.append(
                DueBacklog(engine=engine, count=answer["count"], oldest_due_at=answer["oldest"])
            )
    return rows


def steps_released_unstarted() -> dict[str, int]:
    """Steps released to the queue that no worker has started yet, per engine: the
    queued entries of the index step_state_engine_due (state, engine, due_at)."""
    return {
        row["engine"]: row["count"]
        for row in Step.objects.filter(state=StepState.QUEUED)
        .order_by()
        .values("engine")
        .annotate(count=Count("id"))
        .order_by("engine")
    }


@dataclass(frozen=True)
class EngineBacklog:
    engine: str
    due_unreleased: int
    oldest_due_at: dt.datetime | None
    released_unstarted: int


def steps_backlog(*, now: dt.datetime) -> list[EngineBacklog]:
    """Per engine: steps due but not released, the oldest of them, and steps released
    but not started (the gauges of /metrics, docs/operations.md)."""
    due = {row.engine: row for row in steps_due_unreleased(now=now)}
    queued = steps_released_unstarted()
    return [
        EngineBacklog(
            engine=engine,
            due_unreleased=due[engine].count if engine in due else 0,
            oldest_due_at=due[engine].oldest_due_at if engine in due else None,
            released_unstarted=queued.get(engine, 0),
        )
        for engine in sorted({*due, *queued})
    ]


# --- Dispatcher and worker health ---------------------------------------------------------


@dataclass(frozen=True)
class RoleBeats:
    role: str
    newest_beat_at: dt.datetime
    alive: int


def heartbeat_roles(*, now: dt.datetime) -> list[RoleBeats]:
    """Per role: the newest heartbeat and the processes whose beat is fresh (younger
    than SCHEDULES_HEARTBEAT_STALE_AFTER). The heartbeat table holds one row per live
    process."""
    stale = now - dt.timedelta(seconds=settings.SCHEDULES_HEARTBEAT_STALE_AFTER)
    return [
        RoleBeats(role=row["role"], newest_beat_at=row["newest"], alive=row["alive"])
        for row in Heartbeat.objects.order_by()
        .values("role")
        .annotate(newest=Max("beat_at"), alive=Count("id", filter=Q(beat_at__gte=stale)))
        .order_by("role")
    ]


@dataclass(frozen=True)
class RoleHealth:
    """A role is up while its newest heartbeat is fresh: the rule of the dispatcher and
    workers health checks (schedules/health.py), read from the same rows."""

    role: str
    label: str
    ok: bool
    alive: int
    newest_beat_at: dt.datetime | None
    age_seconds: float | None
    message: str


@dataclass(frozen=True)
class ProcessBeat:
    name: str
    role: str
    started_at: dt.datetime
    beat_at: dt.datetime
    alive: bool


#: Processes listed on the overview (the newest beats).
PROCESS_ROWS = 50


def processes_health(*, now: dt.datetime) -> tuple[list[RoleHealth], list[ProcessBeat]]:
    """The dispatcher's and the workers' health from their heartbeats, and the processes
    that beat lately. Reads the database only: a broker outage does not slow it."""
    stale_after: float = settings.SCHEDULES_HEARTBEAT_STALE_AFTER
    beats = {row.role: row for row in heartbeat_roles(now=now)}
    roles = []
    for role in ProcessRole:
        row = beats.get(role.value)
        newest = row.newest_beat_at if row is not None else None
        alive = row.alive if row is not None else 0
        problem = heartbeat_problem(role.value, newest, now=now)
        roles.append(
            RoleHealth(
                role=role.value,
                label=str(role.label),
                ok=problem is None,
                alive=alive,
                newest_beat_at=newest,
                age_seconds=None if newest is None else round((now - newest).total_seconds(), 1),
                message=problem or f"{alive} alive",
            )
        )
    stale = now - dt.timedelta(seconds=stale_after)
    processes = [
        ProcessBeat(
            name=beat.name,
            role=beat.role,
            started_at=beat.started_at,
            beat_at=beat.beat_at,
            alive=beat.beat_at >= stale,
        )
        for beat in Heartbeat.objects.only("name", "role", "started_at", "beat_at").order_by(
            "-beat_at"
        )[:PROCESS_ROWS]
    ]
    return roles, processes
