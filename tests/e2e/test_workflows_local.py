"""Seed 002 end to end on the local engine: the real dispatcher and Celery worker run the
shipped database-migration workflow against a migration service started by the test."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from schedules import services
from schedules.models import Execution, ExecutionStatus, Run, RunStatus, Step, Workflow

from .conftest import REDIS_URL, ROOT, RecordingService, Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

EXAMPLE = ROOT / "examples" / "workflows" / "database_migration.json"
LOOP = ["WaitForMigration", "MigrationStatus"]


@dataclass
class Call:
    at: float
    method: str
    path: str
    key: str  # the Idempotency-Key header


@dataclass
class MigrationService:
    """Seed 002's migration service: schema versions, constraints, a long migration."""

    in_sync: bool = True
    #: How many status checks answer "Running" before one answers "Stopped".
    running_checks: int = 3
    #: Seconds POST /migrations takes (to kill a worker in the middle of it).
    start_takes: float = 0.0
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, method: str, path: str) -> dict[str, Any]:
        if path == "/versions":
            return {"in_sync": self.in_sync, "source": 41, "target": 41 if self.in_sync else 42}
        if path == "/migrations" and method == "POST":
            time.sleep(self.start_takes)
            return {"id": "m-1", "status": "Running"}
        if path == "/migrations/current":
            checks = sum(1 for c in self.calls if c.path == path)
            return {
                "id": "m-1",
                "status": "Running" if checks <= self.running_checks else "Stopped",
            }
        return {"ok": True}

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]


@pytest.fixture
def migration_service() -> Iterator[MigrationService]:
    service = MigrationService()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with service.lock:
                service.calls.append(
                    Call(time.time(), self.command, self.path, self.headers["Idempotency-Key"])
                )
            body = json.dumps(service.answer(self.command, self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    service.url = f"http://127.0.0.1:{server.server_port}"
    yield service
    server.shutdown()
    server.server_close()


def seed_002(service: MigrationService, name: str = "database-migration") -> Workflow:
    """The shipped definition, pointed at the test's service and waiting 1 s per check."""
    text = EXAMPLE.read_text().replace("http://migrations.internal", service.url)
    definition = json.loads(text)
    definition["States"]["WaitForMigration"]["Seconds"] = 1
    return services.workflow_create(name=name, definition=definition, overlap_policy="allow")


@pytest.fixture
def workflow_stack(
    tmp_path: Path, recording_service: type[RecordingService], settings: Any
) -> Iterator[Stack]:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    broker = REDIS_URL if connection.vendor == "postgresql" else "filesystem://"
    stack = start_stack(
        tmp_path,
        recording_service,
        broker=broker,
        queue=f"e2e-{uuid.uuid4().hex[:8]}",
        dispatcher=False,
        SCHEDULES_LEASE_SECONDS="4",
        SCHEDULES_REDELIVER_AFTER="2",
    )
    stack.start_dispatcher(sweep_interval=1)
    yield stack
    stack.stop()


def wait_until_ended(executions: int, timeout: float, stack: Stack) -> list[Execution]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        ended = list(Execution.objects.exclude(status=ExecutionStatus.RUNNING).order_by("pk"))
        if len(ended) >= executions:
            return ended
        time.sleep(0.1)
    rows = list(Execution.objects.values_list("pk", "status", "state_name", "cause"))
    pytest.fail(f"executions not ended after {timeout} s: {rows}\n{stack.logs()}")


def runs_by_state(execution: Execution) -> dict[str, list[Run]]:
    found: dict[str, list[Run]] = {}
    for run in Run.objects.filter(execution=execution).select_related("step").order_by("pk"):
        found.setdefault(run.step.state_name, []).append(run)
    return found


def test_seed_002_polls_until_stopped_then_applies_the_constraints(
    workflow_stack: Stack, migration_service: MigrationService
) -> None:
    workflow = seed_002(migration_service)
    started = services.execution_start(workflow=workflow, input={"requested_by": "test"})
    (execution,) = wait_until_ended(1, 60, workflow_stack)
    assert execution.pk == started.execution.pk
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.cause
    assert execution.state_name == "Done"
    assert migration_service.paths() == [
        "/versions",
        "/constraints/drop",
        "/migrations",
        *["/migrations/current"] * 4,  # Running three times, then Stopped
        "/constraints/apply",
    ]
    path = [entry["state"] for entry in execution.history]
    loop = ["WaitForMigration", "MigrationStatus", "Stopped?"]
    assert path == [
        "CheckVersions",
        "InSync?",
        "DropConstraints",
        "StartMigration",
        *loop * 4,
        "ApplyConstraints",
        "Done",
    ]
    assert execution.data["MigrationStatus"]["json"]["status"] == "Stopped"
    assert execution.data["CheckVersions"]["json"]["in_sync"] is True
    # Each state's steps ran once each, by the worker, on the local engine, on time.
    runs = runs_by_state(execution)
    assert {state: len(r) for state, r in runs.items()} == {
        "CheckVersions": 1,
        "DropConstraints": 1,
        "StartMigration": 1,
        "WaitForMigration": 4,
        "MigrationStatus": 4,
        "ApplyConstraints": 1,
    }
    every = [run for state_runs in runs.values() for run in state_runs]
    assert {(r.status, r.engine, r.uncertain) for r in every} == {
        (RunStatus.SUCCEEDED, "local", False)
    }
    checks = [c.at for c in migration_service.calls if c.path == "/migrations/current"]
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert all(1.0 <= gap < 3.0 for gap in gaps), gaps  # each check after a 1 s Wait
    assert all(r.lateness is not None and r.lateness.total_seconds() < 2 for r in every)


def test_seed_002_out_of_sync_fails_at_the_choice_and_changes_nothing(
    workflow_stack: Stack, migration_service: MigrationService
) -> None:
    migration_service.in_sync = False
    services.execution_start(workflow=seed_002(migration_service))
    (execution,) = wait_until_ended(1, 60, workflow_stack)
    assert execution.status == ExecutionStatus.FAILED
    assert (execution.state_name, execution.error) == ("NotInSync", "VersionsNotInSync")
    assert execution.cause.startswith("The source and target schema versions differ")
    assert migration_service.paths() == ["/versions"]
    assert list(Step.objects.values_list("state_name", flat=True)) == ["CheckVersions"]


def test_a_rule_starts_seed_002_again_and_again(
    workflow_stack: Stack, migration_service: MigrationService
) -> None:
    migration_service.running_checks = 0  # each migration has stopped at the first check
    workflow = seed_002(migration_service)
    workflow_stack.start_worker()  # a second worker: starts and steps overlap
    job = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=2, rate_unit="seconds", max_runs=3
    )
    ended = wait_until_ended(3, 60, workflow_stack)
    assert [e.status for e in ended] == [ExecutionStatus.SUCCEEDED] * 3
    assert {e.started_by_id for e in ended} == {job.pk}
    starts = sorted(e.started_at for e in ended)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(1.5 < gap < 3.5 for gap in gaps), gaps
    assert migration_service.paths().count("/constraints/apply") == 3
    job.refresh_from_db()
    assert job.run_count == 3 and job.status == "succeeded"


def test_a_worker_killed_during_a_task_is_taken_over_and_the_execution_goes_on(
    workflow_stack: Stack, migration_service: MigrationService
) -> None:
    migration_service.start_takes = 3.0
    migration_service.running_checks = 1
    started = services.execution_start(workflow=seed_002(migration_service))
    first_worker = next(p for p in workflow_stack.processes if "celery" in p.args)
    deadline = time.time() + 30
    while not any(c.path == "/migrations" for c in migration_service.calls):
        assert time.time() < deadline, workflow_stack.logs()
        time.sleep(0.05)
    os.killpg(first_worker.pid, signal.SIGKILL)  # the worker and its pool die mid-call
    first_worker.wait()
    workflow_stack.start_worker()  # as a supervisor would
    (execution,) = wait_until_ended(1, 90, workflow_stack)
    assert execution.pk == started.execution.pk
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.cause
    runs = runs_by_state(execution)
    lost, taken_over = runs["StartMigration"]
    assert lost.status == RunStatus.ABANDONED and lost.attempt == 1
    assert taken_over.status == RunStatus.SUCCEEDED and taken_over.attempt == 2
    assert taken_over.uncertain and "may already have had its effect" in taken_over.note
    # Only the Task the worker died in ran twice, with the same Idempotency-Key (a
    # service can drop the repeat); the states before it ran once, and so did the rest.
    starts = [c for c in migration_service.calls if c.path == "/migrations"]
    assert len(starts) == 2 and starts[0].key == starts[1].key
    assert migration_service.paths().count("/constraints/drop") == 1
    assert migration_service.paths().count("/constraints/apply") == 1
    once = {state: len(r) for state, r in runs.items() if state not in [*LOOP, "StartMigration"]}
    assert once == {"CheckVersions": 1, "DropConstraints": 1, "ApplyConstraints": 1}
