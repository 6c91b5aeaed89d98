"""Retention: finished rows are deleted once older than their keep age, in small batches.

What goes (docs/operations.md, "Retention and purge"): finished runs, steps, jobs,
classrooms, workflow executions and notification deliveries older than the age kept
for how they ended (SCHEDULES_KEEP_SUCCEEDED_DAYS, _FAILED_DAYS, _UNCERTAIN_DAYS,
_CANCELLED_DAYS; 0 keeps forever), and Idempotency-Keys past their window. What is
still needed stays, whatever its age:

- a run that is still running, and every run and step of an unfinished step's
  occurrence (a recurring or polling job reads its occurrence's first check and run
  when it plans the next one);
- each job's newest run and its latest step (``job_run_now`` runs a failed job's latest
  step again), until the job itself goes;
- everything of a classroom or a workflow execution that has not finished;
- a job, classroom or execution that has not finished, or still has a step; a job that
  is a workflow's schedule, or started a workflow execution still running.

A row's age counts from the latest of its times: a run from its start, a step from
its due time and its last change, a job from its due time and its last change, a
classroom from its end, an execution from its end.

**Batches.** Each kind is walked in index order by a keyset (its time, then id), a
page of ``batch_size`` rows at a time. The rows of a page that the rules let go are
deleted in one short transaction of their own (children before parents: runs, then
steps, then executions, jobs and classrooms; a notification delivery that points at
a deleted row loses the link, as ``on_delete=SET_NULL`` says). So no transaction
holds more than ``batch_size`` rows, and no table is locked for long.

**Lock order** (docs/architecture.md). A purge transaction deletes rows of one table,
locked in ascending id with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: it never waits
for a row it deletes that another transaction holds (that row waits for the next
purge). It may wait for a notification delivery or an execution whose link it clears,
and nothing holding one of those waits for a finished row; so it can neither deadlock
with the worker nor hold it up for longer than one batch. Rules are
checked again under that lock, so a job run again meanwhile stays. On SQLite each
batch is one IMMEDIATE transaction: the database's write lock for a few milliseconds.

A dry run walks the same pages and counts the rows the rules would let go, reading
"a step has no runs left" as "none of its runs is kept", and so on up; it writes
nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, connection, models
from django.utils import timezone

from ..models import (
    FINAL_STATES,
    Classroom,
    DeliveryStatus,
    Execution,
    ExecutionStatus,
    IdempotencyRecord,
    Job,
    NotificationDelivery,
    PlanStatus,
    Precision,
    Run,
    RunStatus,
    ScheduleType,
    Step,
    StepState,
    Workflow,
)
from .leases import placeholders
from .transactions import Busy, run_retrying

logger = logging.getLogger(__name__)

#: The ages by how a row ended, and the setting that holds each (days; None: forever).
AGE_SETTINGS = {
    "succeeded": "SCHEDULES_KEEP_SUCCEEDED_DAYS",
    "failed": "SCHEDULES_KEEP_FAILED_DAYS",
    "uncertain": "SCHEDULES_KEEP_UNCERTAIN_DAYS",
    "cancelled": "SCHEDULES_KEEP_CANCELLED_DAYS",
}
#: A finished run's age class by its status (an uncertain run is "uncertain" whatever it is).
RUN_CLASSES: dict[str, str] = {
    RunStatus.SUCCEEDED.value: "succeeded",
    RunStatus.SKIPPED.value: "succeeded",
    RunStatus.NOT_DONE.value: "succeeded",
    RunStatus.FAILED.value: "failed",
    RunStatus.RETRYING.value: "failed",
    RunStatus.ABANDONED.value: "failed",
}
#: A finished job's, classroom's, step's or execution's age class by its status or state.
END_CLASSES: dict[str, str] = {
    PlanStatus.SUCCEEDED.value: "succeeded",
    PlanStatus.FAILED.value: "failed",
    PlanStatus.CANCELLED.value: "cancelled",
}
DELIVERY_CLASSES: dict[str, str] = {
    DeliveryStatus.SENT.value: "succeeded",
    DeliveryStatus.FAILED.value: "failed",
}
FINAL_PLAN = [PlanStatus.SUCCEEDED.value, PlanStatus.FAILED.value, PlanStatus.CANCELLED.value]
FINAL_EXECUTION = [
    ExecutionStatus.SUCCEEDED.value,
    ExecutionStatus.FAILED.value,
    ExecutionStatus.CANCELLED.value,
]
FINAL_STEP = [state.value for state in FINAL_STATES]
assert set(FINAL_STEP) == {StepState.SUCCEEDED, StepState.FAILED, StepState.CANCELLED}

#: The kinds, in the order they are purged (children before parents).
KINDS = (
    "notification_deliveries",
    "runs",
    "steps",
    "executions",
    "jobs",
    "classrooms",
    "idempotency_records",
)

RUN = Run._meta.db_table
STEP = Step._meta.db_table
JOB = Job._meta.db_table
CLASSROOM = Classroom._meta.db_table
EXECUTION = Execution._meta.db_table
DELIVERY = NotificationDelivery._meta.db_table
WORKFLOW = Workflow._meta.db_table
IDEMPOTENCY = IdempotencyRecord._meta.db_table

Clause = tuple[str, list[Any]]


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long finished rows are kept, by how they ended (None: forever)."""

    succeeded: dt.timedelta | None
    failed: dt.timedelta | None
    uncertain: dt.timedelta | None
    cancelled: dt.timedelta | None

    @classmethod
    def from_settings(cls) -> Retention:
        """The ages of SCHEDULES_KEEP_*_DAYS; a bad value raises ImproperlyConfigured
        naming its setting."""
        ages: dict[str, dt.timedelta | None] = {}
        for name, setting in AGE_SETTINGS.items():
            days = getattr(settings, setting)
            if days is not None and (
                isinstance(days, bool) or not isinstance(days, int | float) or days < 0
            ):
                raise ImproperlyConfigured(
                    f"{setting} must be a number of days from 0 up, or None to keep forever; "
                    f"it is {days!r}."
                )
            ages[name] = dt.timedelta(days=days) if days else None
        return cls(**ages)

    @classmethod
    def older_than(cls, age: dt.timedelta) -> Retention:
        """One age for every class (``purge --older-than``)."""
        if age <= dt.timedelta(0):
            raise ValueError("the age must be positive")
        return cls(succeeded=age, failed=age, uncertain=age, cancelled=age)

    def cutoffs(self, now: dt.datetime) -> dict[str, dt.datetime | None]:
        """Per class, the time before which a finished row may go (None: never)."""
        return {
            name: None if age is None else now - age
            for name, age in dataclasses.asdict(self).items()
        }

    def as_dict(self) -> dict[str, float | None]:
        """Each class's age in days (None: forever)."""
        return {
            name: None if age is None else age.total_seconds() / 86400
            for name, age in dataclasses.asdict(self).items()
        }


@dataclasses.dataclass
class PurgeReport:
    """What a purge deleted (a dry run: would delete), per kind."""

    dry_run: bool
    now: dt.datetime
    retention: Retention
    batch_size: int
    deleted: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examined: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: Transactions that deleted rows (none in a dry run).
    batches: int = 0
    #: Batches left for the next purge: a conflict the database kept reporting, or a row
    #: that gained a reference meanwhile.
    conflicts: int = 0
    seconds: float = 0.0
    #: False when ``max_seconds`` stopped it before the end (the next purge goes on).
    complete: bool = True

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "now": self.now.astimezone(dt.UTC).isoformat(),
            "keep_days": self.retention.as_dict(),
            "batch_size": self.batch_size,
            "deleted": dict(self.deleted),
            "total": self.total,
            "examined": dict(self.examined),
            "batches": self.batches,
            "conflicts": self.conflicts,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.total / self.seconds, 1) if self.seconds else None,
            "complete": self.complete,
        }


@dataclasses.dataclass(frozen=True)
class PurgeProgress:
    """Where a purge is: the kind it walks, the rows of that kind walked so far of
    ``candidates`` (the rows old enough to be looked at), and those deleted."""

    kind: str
    examined: int
    candidates: int
    deleted: int
    seconds: float


def _any(clauses: Iterable[Clause]) -> Clause:
    parts = list(clauses)
    if not parts:
        return "1 = 0", []
    return "(" + " OR ".join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _all(*clauses: Clause) -> Clause:
    return " AND ".join(sql for sql, _ in clauses), [p for _, ps in clauses for p in ps]


def _in(values: Sequence[Any]) -> str:
    return f"({placeholders(len(values))})"


def _ids(column: str, ids: Sequence[int]) -> Clause:
    """``column`` is one of ``ids``: one array parameter on PostgreSQL (less to bind and
    to parse than a thousand), a list on SQLite."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(ids)]
    return f"{column} IN {_in(ids)}", list(ids)


class Rules:
    """The SQL of "this row may go", for each kind, against one set of cutoffs.

    Each builder takes the alias of the row it judges and returns (sql, params); the
    subqueries get aliases of their own, so that rules nest (a dry run's job rule holds
    its steps' rule, which holds their runs' rule).
    """

    def __init__(self, cutoffs: dict[str, dt.datetime | None], *, dry_run: bool) -> None:
        field = models.DateTimeField()
        self.cut = {
            name: None if cut is None else field.get_db_prep_value(cut, connection)
            for name, cut in cutoffs.items()
        }
        self.dry_run = dry_run
        self._aliases = itertools.count(1)

    def alias(self, letter: str) -> str:
        return f"{letter}{next(self._aliases)}"

    # --- ages -------------------------------------------------------------------------

    def run_expired(self, r: str) -> Clause:
        """Past its class's age (a running run has none)."""
        parts: list[Clause] = []
        if self.cut["uncertain"] is not None:
            parts.append(
                (
                    f"({r}.uncertain AND {r}.status IN {_in(list(RUN_CLASSES))} "
                    f"AND {r}.started_at < %s)",
                    [*RUN_CLASSES, self.cut["uncertain"]],
                )
            )
        for name in ("succeeded", "failed"):
            statuses = [status for status, kind in RUN_CLASSES.items() if kind == name]
            if self.cut[name] is not None:
                parts.append(
                    (
                        f"(NOT {r}.uncertain AND {r}.status IN {_in(statuses)} "
                        f"AND {r}.started_at < %s)",
                        [*statuses, self.cut[name]],
                    )
                )
        return _any(parts)

    def ended_before(self, a: str, status: str, times: Sequence[str]) -> Clause:
        """Finished (``status`` column in a final status) and each of ``times`` older than
        that status's age."""
        parts: list[Clause] = []
        for value, name in END_CLASSES.items():
            cut = self.cut[name]
            if cut is not None:
                older = " AND ".join(f"{a}.{column} < %s" for column in times)
                parts.append((f"({a}.{status} = %s AND {older})", [value, *[cut] * len(times)]))
        return _any(parts)

    # --- what keeps a row -------------------------------------------------------------

    def owners_finished(self, a: str) -> Clause:
        """Its workflow execution and its classroom, if it has one, have finished."""
        e, c = self.alias("e"), self.alias("c")
        return (
            f"({a}.execution_id IS NULL OR EXISTS (SELECT 1 FROM {EXECUTION} {e} "
            f"WHERE {e}.id = {a}.execution_id AND {e}.status IN {_in(FINAL_EXECUTION)})) "
            f"AND ({a}.classroom_id IS NULL OR EXISTS (SELECT 1 FROM {CLASSROOM} {c} "
            f"WHERE {c}.id = {a}.classroom_id AND {c}.status IN {_in(FINAL_PLAN)}))",
            [*FINAL_EXECUTION, *FINAL_PLAN],
        )

    def occurrence_over(self, s: str) -> Clause:
        """No step of the job's occurrence ``s`` belongs to is unfinished."""
        o = self.alias("o")
        return (
            f"NOT EXISTS (SELECT 1 FROM {STEP} {o} WHERE {o}.job_id = {s}.job_id "
            f"AND {o}.sequence = {s}.sequence AND {o}.state NOT IN {_in(FINAL_STEP)})",
            list(FINAL_STEP),
        )

    def job_expired(self, j: str) -> Clause:
        """Finished, past its age, no workflow's schedule, and no start of a workflow
        execution still running."""
        w, x = self.alias("w"), self.alias("x")
        return _all(
            self.ended_before(j, "status", ["due_at", "updated_at"]),
            (f"NOT EXISTS (SELECT 1 FROM {WORKFLOW} {w} WHERE {w}.schedule_id = {j}.id)", []),
            (
                f"NOT EXISTS (SELECT 1 FROM {EXECUTION} {x} WHERE {x}.started_by_id = {j}.id "
                f"AND {x}.status NOT IN {_in(FINAL_EXECUTION)})",
                list(FINAL_EXECUTION),
            ),
        )

    def job_of_expired(self, a: str) -> Clause:
        j = self.alias("j")
        sql, params = self.job_expired(j)
        return f"EXISTS (SELECT 1 FROM {JOB} {j} WHERE {j}.id = {a}.job_id AND {sql})", params

    # --- the rule of each kind ----------------------------------------------------------

    def run(self, r: str) -> Clause:
        s, n = self.alias("s"), self.alias("n")
        over_sql, over_params = self.occurrence_over(s)
        job_sql, job_params = self.job_of_expired(r)
        return _all(
            self.run_expired(r),
            (
                f"EXISTS (SELECT 1 FROM {STEP} {s} WHERE {s}.id = {r}.step_id "
                f"AND {s}.state IN {_in(FINAL_STEP)} AND ({s}.job_id IS NULL OR {over_sql}))",
                [*FINAL_STEP, *over_params],
            ),
            self.owners_finished(r),
            (
                f"({r}.job_id IS NULL OR EXISTS (SELECT 1 FROM {RUN} {n} "
                f"WHERE {n}.job_id = {r}.job_id AND {n}.started_at >= {r}.started_at "
                f"AND ({n}.started_at > {r}.started_at OR {n}.id > {r}.id)) OR {job_sql})",
                job_params,
            ),
        )

    def children_gone(self, a: str, column: str, table: str, child: str) -> Clause:
        """No row of ``table`` points at ``a`` by ``column`` (a dry run: none is kept)."""
        x = self.alias(child[0])
        if not self.dry_run:
            return f"NOT EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.{column} = {a}.id)", []
        rule_sql, rule_params = self.run(x) if child == "run" else self.step(x)
        return (
            f"NOT EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.{column} = {a}.id "
            f"AND NOT ({rule_sql}))",
            rule_params,
        )

    def step(self, s: str) -> Clause:
        later = self.alias("l")
        over_sql, over_params = self.occurrence_over(s)
        job_sql, job_params = self.job_of_expired(s)
        return _all(
            self.ended_before(s, "state", ["due_at", "updated_at"]),
            self.owners_finished(s),
            (
                f"({s}.job_id IS NULL OR ({over_sql} AND (EXISTS (SELECT 1 FROM {STEP} {later} "
                f"WHERE {later}.job_id = {s}.job_id AND {later}.sequence >= {s}.sequence "
                f"AND ({later}.sequence > {s}.sequence OR {later}.poll_number > {s}.poll_number)) "
                f"OR {job_sql})))",
                [*over_params, *job_params],
            ),
            self.children_gone(s, "step_id", RUN, "run"),
        )

    def job(self, j: str) -> Clause:
        return _all(self.job_expired(j), self.children_gone(j, "job_id", STEP, "step"))

    def classroom(self, c: str) -> Clause:
        return _all(
            self.ended_before(c, "status", ['"end"', "updated_at"]),
            self.children_gone(c, "classroom_id", STEP, "step"),
        )

    def execution(self, e: str) -> Clause:
        return _all(
            self.ended_before(e, "status", ["finished_at", "updated_at"]),
            self.children_gone(e, "execution_id", STEP, "step"),
        )

    def delivery(self, d: str) -> Clause:
        parts = [
            (f"({d}.status = %s AND {d}.created_at < %s)", [status, self.cut[name]])
            for status, name in DELIVERY_CLASSES.items()
            if self.cut[name] is not None
        ]
        return _any(parts)


@dataclasses.dataclass(frozen=True)
class Walk:
    """One index range of a kind, walked by (``time``, id): ``where`` selects it."""

    where: Clause
    time: str


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    table: str
    walks: list[Walk]
    rule: Callable[[Rules, str], Clause]
    #: (table, column) of the rows that point at a deleted one and lose the link.
    unlink: tuple[tuple[str, str], ...] = ()


def _latest(*cuts: Any) -> Any:
    known = [cut for cut in cuts if cut is not None]
    return max(known) if known else None


def _kinds(rules: Rules, now: dt.datetime) -> list[Kind]:
    cut = rules.cut

    def by_end(column: str, time_column: str) -> list[Walk]:
        return [
            Walk((f"a.{column} = %s AND a.{time_column} < %s", [value, cut[name]]), time_column)
            for value, name in END_CLASSES.items()
            if cut[name] is not None
        ]

    run_walks = []
    for status, name in RUN_CLASSES.items():
        # An uncertain run of this status has its own age: walk up to the later cutoff.
        until = _latest(cut[name], cut["uncertain"])
        if until is not None:
            run_walks.append(
                Walk(("a.status = %s AND a.started_at < %s", [status, until]), "started_at")
            )
    delivery_walks = [
        Walk(("a.status = %s AND a.created_at < %s", [status, cut[name]]), "created_at")
        for status, name in DELIVERY_CLASSES.items()
        if cut[name] is not None
    ]
    expires = models.DateTimeField().get_db_prep_value(now, connection)
    return [
        Kind("notification_deliveries", DELIVERY, delivery_walks, Rules.delivery),
        Kind("runs", RUN, run_walks, Rules.run, unlink=((DELIVERY, "run_id"),)),
        Kind("steps", STEP, by_end("state", "due_at"), Rules.step),
        Kind(
            "executions",
            EXECUTION,
            by_end("status", "started_at"),
            Rules.execution,
            unlink=((DELIVERY, "execution_id"),),
        ),
        Kind(
            "jobs",
            JOB,
            by_end("status", "due_at"),
            Rules.job,
            unlink=((DELIVERY, "job_id"), (EXECUTION, "started_by_id")),
        ),
        Kind("classrooms", CLASSROOM, by_end("status", '"start"'), Rules.classroom),
        Kind(
            "idempotency_records",
            IDEMPOTENCY,
            [Walk(("a.expires_at <= %s", [expires]), "expires_at")],
            lambda _rules, a: (f"{a}.expires_at <= %s", [expires]),
        ),
    ]


class Purge:
    """One purge: walks every kind in order (``retention_purge`` runs it)."""

    def __init__(
        self,
        *,
        retention: Retention,
        now: dt.datetime,
        batch_size: int,
        dry_run: bool,
        max_seconds: float | None,
        pause: float,
        progress: Callable[[PurgeProgress], None] | None,
    ) -> None:
        self.rules = Rules(retention.cutoffs(now), dry_run=dry_run)
        self.kinds = _kinds(self.rules, now)
        # Built once: the same statement text for every page.
        self.rule_sql = {kind.name: kind.rule(self.rules, "a") for kind in self.kinds}
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.pause = pause
        self.progress = progress
        self.started = time.monotonic()
        self.deadline = None if max_seconds is None else self.started + max_seconds
        self.report = PurgeReport(
            dry_run=dry_run, now=now, retention=retention, batch_size=batch_size
        )
        self.lock = (
            " FOR UPDATE SKIP LOCKED"
            if connection.features.has_select_for_update_skip_locked
            else ""
        )

    def run(self) -> PurgeReport:
        try:
            for kind in self.kinds:
                if not self.walk_kind(kind):
                    self.report.complete = False
                    break
        finally:
            self.report.seconds = time.monotonic() - self.started
        return self.report

    def walk_kind(self, kind: Kind) -> bool:
        """Every page of every walk of ``kind``; False when out of time."""
        candidates = self.count(kind) if self.progress else 0
        for walk in kind.walks:
            after: tuple[Any, int] | None = None
            while True:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    return False
                page = self.page(kind, walk, after)
                if not page:
                    break
                after = page[-1]
                ids = [pk for _, pk in page]
                deleted = self.judge(kind, ids)
                self.report.examined[kind.name] += len(ids)
                self.report.deleted[kind.name] += deleted
                if self.progress:
                    self.progress(
                        PurgeProgress(
                            kind=kind.name,
                            examined=self.report.examined[kind.name],
                            candidates=max(candidates, self.report.examined[kind.name]),
                            deleted=self.report.deleted[kind.name],
                            seconds=time.monotonic() - self.started,
                        )
                    )
                if len(page) < self.batch_size:
                    break
                if deleted and self.pause:
                    time.sleep(self.pause)
        if self.progress:
            examined = self.report.examined[kind.name]
            self.progress(
                PurgeProgress(
                    kind=kind.name,
                    examined=examined,
                    candidates=examined,
                    deleted=self.report.deleted[kind.name],
                    seconds=time.monotonic() - self.started,
                )
            )
        return True

    def count(self, kind: Kind) -> int:
        """The rows ``kind``'s walks will look at (index ranges only: cheap)."""
        total = 0
        with connection.cursor() as cursor:
            for walk in kind.walks:
                sql, params = walk.where
                cursor.execute(f"SELECT COUNT(*) FROM {kind.table} a WHERE {sql}", params)
                (count,) = cursor.fetchone() or (0,)
                total += int(count)
        return total

    def page(self, kind: Kind, walk: Walk, after: tuple[Any, int] | None) -> list[tuple[Any, int]]:
        """The next ``batch_size`` rows of the walk after ``after``: (time, id)."""
        sql, params = walk.where
        t = f"a.{walk.time}"
        if after is not None:
            sql += f" AND {t} >= %s AND ({t} > %s OR a.id > %s)"
            params = [*params, after[0], after[0], after[1]]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {t}, a.id FROM {kind.table} a WHERE {sql} ORDER BY {t}, a.id LIMIT %s",
                [*params, self.batch_size],
            )
            return [(row[0], row[1]) for row in cursor.fetchall()]

    def chosen(self, kind: Kind, ids: Sequence[int], *, lock: bool) -> list[int]:
        """The rows of ``ids`` that may go (locked, with ``lock``: on PostgreSQL in
        ascending id, skipping any another transaction holds)."""
        rule_sql, rule_params = self.rule_sql[kind.name]
        ids_sql, ids_params = _ids("a.id", ids)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT a.id FROM {kind.table} a WHERE {ids_sql} AND {rule_sql} "
                f"ORDER BY a.id{self.lock if lock else ''}",
                [*ids_params, *rule_params],
            )
            return [row[0] for row in cursor.fetchall()]

    def judge(self, kind: Kind, ids: Sequence[int]) -> int:
        """Delete the rows of one page that may go (a dry run: count them)."""
        if self.dry_run:
            return len(self.chosen(kind, ids, lock=False))
        if not self.lock:
            # SQLite: a write transaction takes the database's write lock, so the page is
            # judged first without one, and a page with nothing to delete takes none.
            # (PostgreSQL judges it once, under the rows' locks: planning and running
            # the rules is most of a batch's cost.)
            ids = self.chosen(kind, ids, lock=False)
            if not ids:
                return 0

        def delete() -> int:
            doomed = self.chosen(kind, ids, lock=True)
            if not doomed:
                return 0
            with connection.cursor() as cursor:
                for table, column in kind.unlink:
                    where, params = _ids(column, doomed)
                    cursor.execute(f"UPDATE {table} SET {column} = NULL WHERE {where}", params)
                where, params = _ids("id", doomed)
                cursor.execute(f"DELETE FROM {kind.table} WHERE {where}", params)
                return int(cursor.rowcount)

        try:
            deleted = run_retrying(delete, what=f"purge {kind.name}")
        except (Busy, IntegrityError) as exc:
            # A row gained a reference meanwhile, or the database kept reporting a
            # conflict: nothing of this batch was deleted; the next purge tries again.
            self.report.conflicts += 1
            logger.warning("purge: a batch of %s was left for the next purge: %s", kind.name, exc)
            return 0
        if deleted:
            self.report.batches += 1
        return deleted


#: The purge's own PostgreSQL session settings (``_background_writes``).
BACKGROUND_WRITES = {"synchronous_commit": "off", "backend_flush_after": "256kB"}


def _wal_compression(cursor: Any) -> str | None:
    """The WAL compression the purge's session sets, or None: only where the server has it
    off and this role may set it (a superuser, or granted SET on it: PostgreSQL 15)."""
    cursor.execute("SELECT setting, enumvals FROM pg_settings WHERE name = 'wal_compression'")
    setting, choices = cursor.fetchone()
    if setting != "off":
        return None
    if connection.pg_version >= 150000:  # type: ignore[attr-defined]
        cursor.execute("SELECT has_parameter_privilege('wal_compression', 'SET')")
    else:
        cursor.execute("SELECT current_setting('is_superuser') = 'on'")
    if not cursor.fetchone()[0]:
        return None
    return "lz4" if "lz4" in (choices or []) else "pglz"


@contextlib.contextmanager
def _background_writes() -> Iterator[None]:
    """On PostgreSQL, the purge's session writes in the background, out of the way of
    the commits of the dispatcher and the workers:

    - ``synchronous_commit = off``: a batch's commit does not wait for its WAL to
      reach the disk (the WAL writer flushes it within a moment). A crash can undo
      the last batches; their rows come back whole and the next purge deletes them.
    - ``backend_flush_after = 256kB``: the pages the purge dirties are handed to the
      disk as it goes, not left to the kernel to flush in one burst later (a burst
      every other commit then waits behind).
    - ``wal_compression`` (lz4, else pglz), where the role may set it and the server
      has it off: the first change of a page after a checkpoint writes the whole page
      to the WAL, and a purge changes every page of what it deletes; compressed, the
      WAL it writes (which every other commit flushes with its own) is about half.

    All are reset after the purge (the recurring purge runs in a worker whose
    connection serves other actions next).
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        chosen = dict(BACKGROUND_WRITES)
        compression = _wal_compression(cursor)
        if compression is not None:
            chosen["wal_compression"] = compression
        for name, value in chosen.items():
            cursor.execute(f"SET {name} = '{value}'")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                for name in chosen:
                    cursor.execute(f"RESET {name}")
        except DatabaseError:
            connection.close()  # a broken or aborted session: a new one has the defaults


def retention_purge(
    *,
    retention: Retention | None = None,
    now: dt.datetime | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    max_seconds: float | None = None,
    pause: float | None = None,
    progress: Callable[[PurgeProgress], None] | None = None,
) -> PurgeReport:
    """Delete what the retention lets go (module docstring), in batches of ``batch_size``
    rows (SCHEDULES_PURGE_BATCH), each its own transaction, ``pause`` seconds apart
    (SCHEDULES_PURGE_PAUSE). ``retention`` defaults to the SCHEDULES_KEEP_*_DAYS
    settings. ``dry_run`` counts and deletes nothing. ``max_seconds`` stops between two
    batches once reached (the report says ``complete=False``; the next purge goes on).
    ``progress`` is called after each page.
    """
    retention = retention or Retention.from_settings()
    batch_size = batch_size or settings.SCHEDULES_PURGE_BATCH
    if not 1 <= batch_size <= 100_000:
        raise ValueError("batch_size must be from 1 to 100000")
    pause = settings.SCHEDULES_PURGE_PAUSE if pause is None else pause
    purge = Purge(
        retention=retention,
        now=now or timezone.now(),
        batch_size=batch_size,
        dry_run=dry_run,
        max_seconds=max_seconds,
        pause=pause,
        progress=progress,
    )
    with _background_writes():
        report = purge.run()
    logger.info(
        "purge%s: %s row(s) in %.1f s (%s)%s",
        " (dry run)" if dry_run else "",
        report.total,
        report.seconds,
        ", ".join(f"{kind} {count}" for kind, count in report.deleted.items() if count) or "none",
        "" if report.complete else "; stopped at its time limit",
    )
    return report


# --- The purge as a recurring job of the product ---------------------------------------------

#: The name of the recurring job ``purge_schedule`` keeps (one, found by it and its action).
PURGE_JOB_NAME = "Retention purge"
PURGE_ACTION = "purge"
#: Daily at 03:00 (in the job's time zone, UTC by default).
PURGE_DEFAULT_CRON = "0 3 * * *"


def purge_job() -> Job | None:
    """The recurring purge job ``purge_schedule`` keeps, if it has not ended."""
    return (
        Job.objects.filter(action=PURGE_ACTION, name=PURGE_JOB_NAME)
        .exclude(status__in=FINAL_PLAN)
        .order_by("pk")
        .first()
    )


def purge_schedule(
    *,
    cron: str = PURGE_DEFAULT_CRON,
    time_zone: str = "UTC",
    payload: dict[str, Any] | None = None,
) -> tuple[Job, str]:
    """Keep one recurring job that runs the purge by ``cron`` (read in ``time_zone``):
    create it, or bring the one there is in line. Running it again changes nothing.
    Returns the job and what was done: "created", "updated", "replaced" (a new time
    zone: a job's zone is fixed, so the old job is cancelled) or "unchanged".
    Raises ``ValidationError`` for a bad rule or payload (nothing is stored)."""
    from .jobs import job_cancel, job_schedule, job_update

    payload = payload or {}
    job = purge_job()
    change = "created"
    if job is not None and job.time_zone != time_zone:
        job_cancel(job=job)
        job, change = None, "replaced"
    if job is None:
        job = job_schedule(
            action=PURGE_ACTION,
            name=PURGE_JOB_NAME,
            payload=payload,
            schedule_type=ScheduleType.CRON,
            cron=cron,
            time_zone=time_zone,
            precision=Precision.RELAXED,
        )
        return job, change
    if job.schedule_type == ScheduleType.CRON and job.cron == cron and job.payload == payload:
        return job, "unchanged"
    return job_update(
        job=job, payload=payload, schedule_type=ScheduleType.CRON, cron=cron
    ), "updated"


def purge_unschedule() -> Job | None:
    """Cancel the recurring purge job, if there is one; return it."""
    from .jobs import job_cancel

    job = purge_job()
    return None if job is None else job_cancel(job=job)
