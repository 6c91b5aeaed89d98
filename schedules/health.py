"""Health checks (django-health-check): the database, the broker, the dispatcher, the
workers and each AWS engine in use. ``/health/`` and ``manage.py health`` run them.

The dispatcher and worker checks read the heartbeats (services/heartbeats.py): a role
is down when its newest beat is older than SCHEDULES_HEARTBEAT_STALE_AFTER. The AWS
checks make one cheap describe call each, kept for SCHEDULES_HEALTH_AWS_CACHE_SECONDS
so that a probe every few seconds does not become an AWS bill.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from health_check.base import HealthCheck, HealthCheckResult
from health_check.checks import Database
from health_check.exceptions import ServiceUnavailable


def _closing_connection(func: Callable[[], None]) -> None:
    """Run a check in the executor's thread, then close that thread's connection."""
    try:
        func()
    finally:
        connection.close()


def _heartbeat_check(role: str) -> None:
    from .models import Heartbeat
    from .services.heartbeats import heartbeat_problem

    try:
        newest = Heartbeat.objects.filter(role=role).order_by("-beat_at").first()
    except DatabaseError as exc:
        raise ServiceUnavailable(f"the heartbeats cannot be read: {type(exc).__name__}") from exc
    problem = heartbeat_problem(
        role,
        newest.beat_at if newest is not None else None,
        now=timezone.now(),
        newest_name=newest.name if newest is not None else "",
    )
    if problem is not None:
        raise ServiceUnavailable(problem)


@dataclasses.dataclass
class Dispatcher(HealthCheck):
    """A run_scheduler process has beaten lately (its loop writes the beat)."""

    def run(self) -> None:
        _closing_connection(lambda: _heartbeat_check("dispatcher"))


@dataclasses.dataclass
class Workers(HealthCheck):
    """At least one Celery worker has beaten lately."""

    def run(self) -> None:
        _closing_connection(lambda: _heartbeat_check("worker"))


@dataclasses.dataclass
class Broker(HealthCheck):
    """The Celery broker answers (a connection is made; the folder broker's folder is
    writable)."""

    timeout = dt.timedelta(seconds=5)

    def run(self) -> None:
        from scheduler_project.celery import app

        try:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=int(self.timeout.total_seconds()))
                conn.default_channel  # noqa: B018  (opens a channel: the broker answers)
        except Exception as exc:
            raise ServiceUnavailable(f"the broker does not answer: {type(exc).__name__}") from exc


class _Cached:
    """The last outcome of an AWS describe call, per engine, for a while."""

    lock = threading.Lock()
    outcomes: dict[str, tuple[float, str]] = {}

    @classmethod
    def run(cls, key: str, probe: Callable[[], None]) -> None:
        keep: float = settings.SCHEDULES_HEALTH_AWS_CACHE_SECONDS
        with cls.lock:
            cached = cls.outcomes.get(key)
        if cached is None or time.monotonic() - cached[0] > keep:
            try:
                probe()
                error = ""
            except Exception as exc:  # noqa: BLE001  (any failure of the call is the answer)
                error = f"{type(exc).__name__}: {exc}"[:300]
            cached = (time.monotonic(), error)
            with cls.lock:
                cls.outcomes[key] = cached
        if cached[1]:
            raise ServiceUnavailable(cached[1])


@dataclasses.dataclass
class StepFunctions(HealthCheck):
    """The state machine exists and answers (DescribeStateMachine)."""

    def run(self) -> None:
        from .aws import aws_client

        arn = settings.SCHEDULES_SFN_STATE_MACHINE_ARN
        _Cached.run(
            f"stepfunctions:{arn}",
            lambda: aws_client("stepfunctions").describe_state_machine(stateMachineArn=arn),
        )


@dataclasses.dataclass
class DynamoDBTTL(HealthCheck):
    """The timers table exists and is active (DescribeTable)."""

    def run(self) -> None:
        from .aws import aws_client

        name = settings.SCHEDULES_TTL_TABLE_NAME

        def probe() -> None:
            table = aws_client("dynamodb").describe_table(TableName=name)["Table"]
            if table["TableStatus"] != "ACTIVE":
                raise RuntimeError(f"table {name} is {table['TableStatus']}")

        _Cached.run(f"dynamodb:{name}", probe)


@dataclasses.dataclass
class EventBridge(HealthCheck):
    """The schedule group exists and is active (GetScheduleGroup)."""

    def run(self) -> None:
        from .aws import aws_client

        name = settings.SCHEDULES_EVENTBRIDGE_GROUP

        def probe() -> None:
            group = aws_client("scheduler").get_schedule_group(Name=name)
            if group.get("State", "ACTIVE") != "ACTIVE":
                raise RuntimeError(f"schedule group {name} is {group['State']}")

        _Cached.run(f"scheduler:{name}", probe)


#: The checks of each AWS engine (by its alias in SCHEDULES_ENGINES).
ENGINE_CHECKS: dict[str, type[HealthCheck]] = {
    "stepfunctions": StepFunctions,
    "dynamodb_ttl": DynamoDBTTL,
    "eventbridge": EventBridge,
}

#: Check names, as /health/ and ``manage.py health --check`` name them.
NAMES: dict[type[HealthCheck], str] = {
    Database: "database",
    Broker: "broker",
    Dispatcher: "dispatcher",
    Workers: "workers",
    StepFunctions: "stepfunctions",
    DynamoDBTTL: "dynamodb_ttl",
    EventBridge: "eventbridge",
}


def configured_checks() -> list[HealthCheck]:
    """The checks for this deployment: the AWS ones only for the engines in use."""
    from .engines import configured_engine_names

    checks: list[HealthCheck] = [Database(), Broker(), Dispatcher(), Workers()]
    for name in configured_engine_names():
        if name in ENGINE_CHECKS:
            checks.append(ENGINE_CHECKS[name]())
    return checks


def run_checks(only: list[str] | None = None) -> list[HealthCheckResult]:
    """Run the configured checks (or those named in ``only``) side by side."""
    checks = [c for c in configured_checks() if only is None or NAMES[type(c)] in only]

    async def gather() -> list[HealthCheckResult]:
        return list(await asyncio.gather(*(check.get_result() for check in checks)))

    return asyncio.run(gather())


def report(results: list[HealthCheckResult]) -> dict[str, Any]:
    """The JSON answer: overall status and each check's."""
    return {
        "status": "unhealthy" if any(r.error for r in results) else "ok",
        "checks": {
            NAMES[type(r.check)]: {
                "ok": r.error is None,
                "error": "" if r.error is None else str(r.error),
                "seconds": round(r.time_taken, 4),
            }
            for r in results
        },
    }
