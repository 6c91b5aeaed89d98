"""Health checks: heartbeats, the broker, the AWS engines, /health/ and manage.py health."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from schedules import health
from schedules.health import _Cached
from schedules.models import Heartbeat, ProcessRole
from schedules.services.heartbeats import (
    HeartbeatThread,
    heartbeat_beat,
    heartbeat_forget,
    heartbeats_purge,
)

# The checks run in threads of their own: they must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def beat(role: str, name: str, age: float) -> None:
    now = timezone.now()
    heartbeat_beat(name=name, role=role, started_at=now)
    Heartbeat.objects.filter(name=name).update(beat_at=now - dt.timedelta(seconds=age))


def report(only: list[str] | None = None) -> dict[str, Any]:
    return health.report(health.run_checks(only))


def test_no_dispatcher_and_no_worker_are_unhealthy() -> None:
    answer = report()
    assert answer["status"] == "unhealthy"
    checks = answer["checks"]
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert checks["dispatcher"]["error"] == (
        "Unavailable: no dispatcher (run_scheduler) is running (none has written a heartbeat)"
    )
    assert "no Celery worker is running" in checks["workers"]["error"]


def test_fresh_beats_are_healthy_and_stale_ones_are_not(settings: Any) -> None:
    settings.SCHEDULES_HEARTBEAT_STALE_AFTER = 30
    beat(ProcessRole.DISPATCHER, "dispatcher:h:1", age=2)
    beat(ProcessRole.WORKER, "worker:h:2", age=40)
    beat(ProcessRole.WORKER, "worker:h:3", age=10)
    assert report()["status"] == "ok"

    Heartbeat.objects.filter(name="worker:h:3").update(
        beat_at=timezone.now() - dt.timedelta(seconds=31)
    )
    answer = report(["workers", "dispatcher"])
    assert set(answer["checks"]) == {"workers", "dispatcher"}
    assert answer["checks"]["dispatcher"]["ok"]
    error = answer["checks"]["workers"]["error"]
    assert "no Celery worker has written a heartbeat for 31 s" in error
    assert "stale after 30 s; the newest was worker:h:3" in error


def test_beat_updates_one_row_per_process_and_forget_deletes_it() -> None:
    started = timezone.now() - dt.timedelta(minutes=5)
    heartbeat_beat(name="worker:h:9", role="worker", started_at=started, info={"n": 1})
    heartbeat_beat(name="worker:h:9", role="worker", started_at=timezone.now(), info={"n": 2})
    row = Heartbeat.objects.get()
    assert row.info == {"n": 2}
    assert row.started_at == started  # kept from the first beat
    heartbeat_forget(name="worker:h:9")
    assert not Heartbeat.objects.exists()


def test_purge_forgets_processes_silent_for_a_day() -> None:
    beat("worker", "worker:old:1", age=86400 + 60)
    beat("worker", "worker:new:2", age=60)
    assert heartbeats_purge() == 1
    assert list(Heartbeat.objects.values_list("name", flat=True)) == ["worker:new:2"]


def test_heartbeat_thread_beats_until_stopped_then_removes_its_row() -> None:
    thread = HeartbeatThread(name="worker:t:1", role="worker", every=0.05, info=lambda: {"x": 1})
    thread.start()
    try:
        deadline = timezone.now() + dt.timedelta(seconds=10)
        first = None
        while timezone.now() < deadline:
            row = Heartbeat.objects.filter(name="worker:t:1").first()
            if row and first is None:
                first = row.beat_at
            elif row and first and row.beat_at > first:
                break
        else:
            pytest.fail("the thread did not beat twice")
        assert row.info == {"x": 1}
    finally:
        thread.stop()
    assert not Heartbeat.objects.filter(name="worker:t:1").exists()


def test_broker_down_fails_its_check(settings: Any) -> None:
    from scheduler_project.celery import app

    saved = app.conf.broker_url, app.conf.broker_transport
    # A Redis port nobody listens on.
    app.conf.broker_url, app.conf.broker_transport = "redis://127.0.0.1:1/0", None
    try:
        answer = report(["broker"])
    finally:
        app.conf.broker_url, app.conf.broker_transport = saved
    assert answer["checks"]["broker"]["error"].startswith("Unavailable: the broker does not answer")


def test_aws_checks_follow_the_engines_and_are_cached(aws: Any, settings: Any) -> None:
    settings.SCHEDULES_ENGINES = {"seconds": "stepfunctions", "relaxed": "dynamodb_ttl"}
    settings.SCHEDULES_HEALTH_AWS_CACHE_SECONDS = 60
    _Cached.outcomes.clear()
    names = [health.NAMES[type(c)] for c in health.configured_checks()]
    assert names == ["database", "broker", "dispatcher", "workers", "dynamodb_ttl", "stepfunctions"]
    answer = report(["stepfunctions", "dynamodb_ttl"])
    assert answer["checks"]["stepfunctions"]["ok"], answer
    assert answer["checks"]["dynamodb_ttl"]["ok"], answer

    # The state machine goes away: the cached answer stands until it expires.
    from schedules.aws import aws_client

    aws_client("stepfunctions").delete_state_machine(
        stateMachineArn=settings.SCHEDULES_SFN_STATE_MACHINE_ARN
    )
    assert report(["stepfunctions"])["checks"]["stepfunctions"]["ok"]
    settings.SCHEDULES_HEALTH_AWS_CACHE_SECONDS = 0
    error = report(["stepfunctions"])["checks"]["stepfunctions"]["error"]
    assert "StateMachineDoesNotExist" in error
    _Cached.outcomes.clear()


def test_local_engines_have_no_aws_checks(settings: Any) -> None:
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "local"}
    names = [health.NAMES[type(c)] for c in health.configured_checks()]
    assert names == ["database", "broker", "dispatcher", "workers"]


def test_health_view_answers_503_then_200_with_json_per_check() -> None:
    client = Client()
    answer = client.get("/health/")
    assert answer.status_code == 503
    assert answer["Content-Type"] == "application/json"
    assert answer["Cache-Control"].startswith("max-age=0")
    assert answer.json()["checks"]["workers"]["ok"] is False

    beat(ProcessRole.DISPATCHER, "dispatcher:h:1", age=0)
    beat(ProcessRole.WORKER, "worker:h:1", age=0)
    answer = client.get("/health/")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == "ok"

    only = client.get("/health/?check=database")
    assert list(only.json()["checks"]) == ["database"]
    unknown = client.get("/health/?check=database,disk")
    assert unknown.status_code == 400
    assert unknown.json()["check"].startswith("unknown check(s) disk; known: broker, database")
    assert client.get("/health/live/").json() == {"status": "ok"}


def test_health_command_exits_non_zero_when_unhealthy() -> None:
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("health", stdout=out)
    assert failed.value.returncode == 1
    assert "dispatcher: Unavailable: no dispatcher" in out.getvalue()

    beat(ProcessRole.DISPATCHER, "dispatcher:h:1", age=0)
    beat(ProcessRole.WORKER, "worker:h:1", age=0)
    out = StringIO()
    call_command("health", "--json", stdout=out)
    assert json.loads(out.getvalue())["status"] == "ok"

    out = StringIO()
    call_command("health", "--check", "database", stdout=out)
    assert out.getvalue().strip() == "database: ok"
