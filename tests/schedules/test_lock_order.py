"""One lock order (invariant 8): owner (job, classroom, execution) → steps in ascending id → runs.

Every transaction of the worker, the dispatcher, the services and the API is recorded
statement by statement and checked against the order written in docs/architecture.md:

1. an owner row written or locked after the transaction locked a step must have been
   locked (on SQLite, whose write transaction excludes every other writer: read)
   before that step;
2. several steps locked by one statement are locked in ascending id;
3. no step is locked after a run.

A second test runs a worker's record and a cancel of the same job at the same moment and
sees the cancel wait for the worker instead of a deadlock that runs the action twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from schedules import services
from schedules.models import (
    Classroom,
    Execution,
    Job,
    PlanStatus,
    Run,
    RunStatus,
    Step,
    StepState,
)
from schedules.services import execution
from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

RANK = {
    Job._meta.db_table: 0,
    Classroom._meta.db_table: 0,
    Execution._meta.db_table: 0,
    Step._meta.db_table: 1,
    Run._meta.db_table: 2,
}
ID_TERM = re.compile(r"WHERE \(?(?:\w+\.)?id (?:= %s|IN \(((?:%s, )*%s)\))")


@dataclass
class Statement:
    table: str
    locks: bool  # UPDATE, DELETE or SELECT ... FOR [NO KEY] UPDATE
    row: Any  # the row's id when the statement names one row by id; a tuple for several
    ordered: bool  # its FOR [NO KEY] UPDATE is over rows in ascending id
    skips: bool  # SKIP LOCKED: never waits, so never part of a deadlock
    sql: str = field(default="", repr=False)


@dataclass
class LockRecorder:
    """Records the statements of each transaction on the default connection."""

    transactions: list[list[Statement]] = field(default_factory=list)
    current: list[Statement] = field(default_factory=list)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any):
        if not connection.in_atomic_block:
            self.end()  # a statement outside any transaction is a transaction of its own
        # executemany: one statement over several rows (the first names the row, if any)
        statement = classify(sql, params[0] if many and params else params)
        if statement is not None:
            self.current.append(statement)
        result = execute(sql, params, many, ctx)
        if not connection.in_atomic_block and self.current:
            self.end()  # autocommit: the statement was its own transaction
        return result

    def end(self) -> None:
        if self.current:
            self.transactions.append(self.current)
        self.current = []

    def violations(self) -> list[str]:
        self.end()
        found: list[str] = []
        for number, statements in enumerate(self.transactions):
            found += [f"transaction {number}: {v}" for v in check(statements)]
        return found


def classify(sql: str, params: Any) -> Statement | None:
    text = " ".join(sql.split()).replace('"', "")
    words = text.split()
    if text.startswith("UPDATE "):
        table, locks = words[1], True
    elif text.startswith("DELETE FROM "):
        table, locks = words[2], True
    elif text.startswith("SELECT "):
        match = re.search(r" FROM (\w+)", text)
        if match is None:
            return None
        table, locks = match.group(1), bool(re.search(r" FOR (NO KEY )?UPDATE", text))
    else:
        return None
    if table not in RANK:
        return None
    row = None
    match = ID_TERM.search(text)
    if match is not None and params is not None:
        first = text[: match.start()].count("%s")
        if match.group(1) is None:
            row = list(params)[first]
        else:
            row = tuple(list(params)[first : first + match.group(1).count("%s")])
    first_column_is_id = text.startswith(f"SELECT {table}.id ") or " SELECT id FROM " in text
    ordered = bool(
        re.search(rf"ORDER BY (?:{table}\.)?id(?: ASC)? FOR (NO KEY )?UPDATE", text)
        or (first_column_is_id and re.search(r"ORDER BY 1(?: ASC)? FOR (NO KEY )?UPDATE", text))
    )
    locks = locks or " FOR NO KEY UPDATE" in text or " FOR UPDATE" in text
    return Statement(table, locks, row, ordered, skips="SKIP LOCKED" in text, sql=text[:160])


def check(statements: list[Statement]) -> list[str]:
    """The three rules of the module docstring, over one transaction's statements."""
    row_locks = connection.features.has_select_for_update  # PostgreSQL; SQLite: one writer
    owners_before_steps: set[tuple[str, Any]] = set()
    steps_locked = run_locked = False
    found = []
    for s in statements:
        rank = RANK[s.table]
        if rank == 0:
            keys = {(s.table, row) for row in (s.row if isinstance(s.row, tuple) else (s.row,))}
            if not steps_locked:
                if s.locks or not row_locks:
                    owners_before_steps |= keys
            elif s.locks and not keys <= owners_before_steps:
                found.append(f"{s.table} row {s.row} locked after a step: {s.sql}")
        elif rank == 1 and s.locks:
            if run_locked:
                found.append(f"a step locked after a run: {s.sql}")
            several = s.row is None
            # Several steps wait-locked at once: in ascending id, or already locked earlier
            # in this transaction by a statement that was.
            if row_locks and several and not s.skips and not s.ordered and not steps_locked:
                found.append(f"several steps locked, not in ascending id: {s.sql}")
            steps_locked = True
        elif rank == 2 and s.locks:
            run_locked = True
    return found


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockRecorder]:
    recorder = LockRecorder()
    for name in ("commit", "rollback"):  # a transaction ends at its commit or rollback
        real = getattr(connection, name)

        def ended(*args: Any, _real: Callable[..., Any] = real) -> Any:
            recorder.end()
            return _real(*args)

        monkeypatch.setattr(connection, name, ended)
    with connection.execute_wrapper(recorder):
        yield recorder


def deliver(step: Step) -> Run:
    step.refresh_from_db()
    run = services.step_execute(step_id=step.pk, version=step.version)
    assert run is not None
    return run


def test_the_recorder_sees_a_transaction_that_breaks_the_order(recorder):
    """The check can fail: a step written before its job, as the worker once did."""
    job = services.job_schedule(action="noop", due_at=timezone.now())
    recorder.transactions.clear()
    step = job.steps.get()
    with transaction.atomic():
        Step.objects.filter(pk=step.pk).update(state=StepState.RUNNING)
        Job.objects.filter(pk=job.pk).update(status=PlanStatus.RUNNING)
    (violation,) = recorder.violations()
    assert f": schedules_job row {job.pk} locked after a step: UPDATE" in violation


WORKER_CASES: dict[str, Callable[[], None]] = {}


def worker_case(func: Callable[[], None]) -> Callable[[], None]:
    WORKER_CASES[func.__name__] = func
    return func


@worker_case
def one_off_job() -> None:
    deliver(services.job_schedule(action="noop", due_at=timezone.now()).steps.get())


@worker_case
def retried_then_failed_job() -> None:
    job = services.job_schedule(
        action="http_check",
        due_at=timezone.now(),
        max_attempts=2,
        payload={"url": "http://127.0.0.1:9/status", "field": "state", "equals": "done"},
        poll_interval=60,
        poll_max_checks=3,
    )
    step = job.steps.get()
    deliver(step)
    step.refresh_from_db()
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    deliver(step)


@worker_case
def recurring_job() -> None:
    job = services.job_schedule(
        action="noop", schedule_type="rate", rate_every=1, rate_unit="minutes"
    )
    step = job.steps.get()
    Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
    deliver(step)


@worker_case
def recurring_job_overlap_allow_taken_over() -> None:
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=1,
        rate_unit="minutes",
        overlap_policy="allow",
    )
    step = job.steps.get()
    now = timezone.now()
    Step.objects.filter(pk=step.pk).update(
        due_at=now, state=StepState.RUNNING, attempts=1, lease_until=now, holder="w:gone:1"
    )
    deliver(step)


@worker_case
def message_of_steps_due_together() -> None:
    """Claimed, run and recorded together (one statement locks several jobs and steps)."""
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": timezone.now()}] * 5)
    gone = Step.objects.order_by("pk").last()
    assert gone is not None
    Step.objects.filter(pk=gone.pk).update(action="removed_since")  # its run fails
    pairs = services.steps_claim_due(limit=10, holder="d:1", lease=5)
    services.steps_execute(pairs=pairs, worker="w:1")
    assert Run.objects.filter(status=RunStatus.SUCCEEDED).count() == 4


@worker_case
def classroom_timeline() -> None:
    start = timezone.now() + dt.timedelta(minutes=1)
    classroom = services.classroom_create(
        title="Maths",
        start=start,
        end=start + dt.timedelta(minutes=2),
        recording_service_ref="room-1",
        live_ping_interval=60,
    )
    for step in classroom.steps.order_by("due_at"):
        Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
        deliver(step)


def _workflow(name: str) -> Any:
    return services.workflow_create(
        name=name,
        definition={
            "StartAt": "Call",
            "States": {
                "Call": {
                    "Type": "Task",
                    "Action": "noop",
                    "Next": "Again?",
                    "Retry": [{"MaxAttempts": 1}],
                },
                "Again?": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.Call.note", "Equals": "", "Next": "Pause"}],
                    "Default": "Done",
                },
                "Pause": {"Type": "Wait", "Seconds": 0, "Next": "Done"},
                "Done": {"Type": "Succeed"},
            },
        },
    )


@worker_case
def workflow_execution() -> None:
    execution = services.execution_start(workflow=_workflow("locks")).execution
    while (step := execution.steps.filter(state=StepState.SCHEDULED).first()) is not None:
        Step.objects.filter(pk=step.pk).update(due_at=timezone.now())
        deliver(step)
    execution.refresh_from_db()
    assert execution.status == "succeeded", execution.cause


@pytest.mark.parametrize("case", sorted(WORKER_CASES))
def test_the_worker_locks_the_owner_first(case, recorder, settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    WORKER_CASES[case]()
    assert recorder.violations() == []
    assert recorder.transactions  # something was recorded


def test_the_services_lock_the_owner_then_steps_in_ascending_id(recorder):
    now = timezone.now()
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=1,
        rate_unit="minutes",
        overlap_policy="allow",
    )
    services.job_update(job=job, max_attempts=5, precision="relaxed", rate_every=2)
    services.job_run_now(job=job)
    services.job_cancel(job=job)
    once = services.job_schedule(action="noop", due_at=now + dt.timedelta(minutes=5))
    services.job_reschedule(job=once, due_at=now + dt.timedelta(minutes=6))
    Step.objects.filter(pk=once.steps.get().pk).update(state=StepState.RUNNING, attempts=1)
    services.job_cancel(job=once)
    classroom = services.classroom_create(
        title="Maths",
        start=now + dt.timedelta(minutes=1),
        end=now + dt.timedelta(minutes=5),
        recording_service_ref="room-1",
        live_ping_interval=30,
    )
    services.classroom_update(classroom=classroom, live_ping_interval=60)
    services.classroom_shift(classroom=classroom, by=dt.timedelta(minutes=1))
    services.classroom_cancel(classroom=classroom)
    workflow = _workflow("services")
    started = services.execution_start(workflow=workflow, start_key="k")
    services.execution_start(workflow=workflow, start_key="k")
    services.execution_cancel(execution=started.execution)
    assert recorder.violations() == []


def test_the_dispatcher_locks_steps_in_ascending_id(recorder, settings, monkeypatch):
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", lambda rows: None)
    settings.SCHEDULES_REDELIVER_AFTER = 0
    now = timezone.now()
    services.job_schedule_many(jobs=[{"action": "noop", "due_at": now}] * 5)
    rows = services.steps_claim_due(limit=3, holder="d:1", lease=5)
    services.steps_unclaim(rows)
    rows = services.steps_claim_due(limit=5, holder="d:1", lease=5)
    services.steps_let_go([pk for pk, _ in rows], holder="d:1")
    services.steps_hold([list(r) for r in rows], holder="w:1", lease=0)
    services.steps_recover(now=timezone.now() + dt.timedelta(seconds=1), queue_empty=lambda: True)
    assert recorder.violations() == []


def test_the_api_changes_a_job_in_the_same_order(recorder):
    alice = User.objects.create_user("alice", password="pw-alice-1234")
    api = client_for(alice)
    job = services.job_schedule(
        action="noop", due_at=timezone.now() + dt.timedelta(minutes=5), owner=alice
    )
    response = api.patch(
        f"/api/jobs/{job.pk}/",
        {"name": "renamed", "due_at": (timezone.now() + dt.timedelta(minutes=9)).isoformat()},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert recorder.violations() == []


def test_a_cancel_racing_the_worker_s_record_waits_instead_of_deadlocking(caplog):
    """The worker's record transaction pauses right after its first lock while a cancel of
    the same job starts. That first lock is the job, so the cancel waits for the record's
    commit, then finds the job finished: no conflict is reported, nothing is retried and
    the action ran once. (Had the worker locked the step first, the cancel would hold the
    job and wait for the step, and the database would have to break a deadlock.)"""
    job = services.job_schedule(action="noop", due_at=timezone.now())
    step = job.steps.get()
    action_done = threading.Event()
    first_lock_taken = threading.Event()
    cancel_started = threading.Event()
    outcome: dict[str, Any] = {}

    def pause_after_first_lock(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        result = execute(sql, *args)
        params, many = args[0], args[1]
        statement = classify(sql, params[0] if many and params else params)
        locks = statement is not None and statement.locks
        if action_done.is_set() and not first_lock_taken.is_set() and locks:
            first_lock_taken.set()
            assert cancel_started.wait(10)
            threading.Event().wait(0.5)  # the cancel is now waiting on its first lock
        return result

    def cancel() -> None:
        assert first_lock_taken.wait(10)
        cancel_started.set()
        try:
            services.job_cancel(job=job)
            outcome["cancel"] = "cancelled"
        except ValidationError as exc:
            outcome["cancel"] = exc.messages[0]
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            outcome["cancel"] = repr(exc)
        finally:
            connection.close()

    real_run_action = execution._run_action

    def run_action(*args: Any) -> Any:
        result = real_run_action(*args)
        action_done.set()
        return result

    thread = threading.Thread(target=cancel)
    thread.start()
    with caplog.at_level(logging.WARNING), connection.execute_wrapper(pause_after_first_lock):
        original, execution._run_action = execution._run_action, run_action
        try:
            run = services.step_execute(step_id=step.pk, version=1)
        finally:
            execution._run_action = original
    thread.join(20)
    assert run is not None and run.status == RunStatus.SUCCEEDED
    assert outcome["cancel"] == "the job is already succeeded; there is nothing to cancel"
    assert Run.objects.filter(step=step).count() == 1
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]
