"""The overdue sweep: steps another engine has not released past its bound are released
from the database, their timers disarmed afterwards (best effort), and the log says
whether that is the engine's normal working (INFO) or a timer that failed (WARNING)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from schedules import services
from schedules.engines import ENGINE_ALIASES, Timer, get_engine
from schedules.models import Step, StepState
from tests.conftest import RecordingEngine

pytestmark = pytest.mark.django_db(transaction=True)


class RelaxedRecordingEngine(RecordingEngine):
    """A recording engine whose timers may fire after its bound (like DynamoDB TTL)."""

    sweep_release_is_normal = True


@pytest.fixture
def engines(recording_engine: type[RecordingEngine], settings: Any) -> Iterator[None]:
    """Relaxed jobs → ``relaxed`` (swept as a matter of course); every other precision class
    → ``recording`` (its timers should fire on time)."""
    ENGINE_ALIASES["relaxed"] = "tests.schedules.test_dispatch_overdue.RelaxedRecordingEngine"
    get_engine.cache_clear()
    classes = dict.fromkeys(settings.SCHEDULES_ENGINES, "recording")
    settings.SCHEDULES_ENGINES = {**classes, "relaxed": "relaxed"}
    settings.SCHEDULES_REDELIVER_AFTER = 300
    yield
    ENGINE_ALIASES.pop("relaxed", None)
    get_engine.cache_clear()


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("schedules.services.dispatch.steps_publish", sent.extend)
    return sent


def overdue_step(now: dt.datetime, precision: str = "") -> Step:
    """A step of a job of that precision (default: the default one), 6 minutes overdue."""
    extra = {"precision": precision} if precision else {}
    job = services.job_schedule(action="noop", due_at=now, **extra)
    Step.objects.filter(job=job).update(due_at=now - dt.timedelta(minutes=6))
    return Step.objects.get(job=job)


def test_the_sweep_disarms_the_timers_of_the_steps_it_released(now, engines, published):
    precise, relaxed = overdue_step(now), overdue_step(now, "relaxed")
    assert (precise.engine, relaxed.engine) == ("recording", "relaxed")
    RecordingEngine.calls.clear()
    assert services.steps_release_overdue(now=now) == 2
    assert sorted(published) == sorted([(precise.pk, 1), (relaxed.pk, 1)])
    # Each on its own engine, after the release: no duplicate message comes later.
    assert sorted(RecordingEngine.calls) == sorted(
        [("disarm", precise.pk, 1), ("disarm", relaxed.pk, 1)]
    )
    assert set(Step.objects.values_list("state", flat=True)) == {StepState.QUEUED}


def test_a_failing_disarm_is_logged_and_not_fatal(now, engines, published, monkeypatch, caplog):
    step = overdue_step(now)

    def refuse(self: RecordingEngine, timer: Timer) -> None:
        raise ConnectionError("engine unreachable")

    monkeypatch.setattr(RecordingEngine, "disarm", refuse)
    with caplog.at_level(logging.WARNING, logger="schedules.services.dispatch"):
        assert services.steps_release_overdue(now=now) == 1
    assert published == [(step.pk, 1)]  # released all the same; fencing guards the rest
    step.refresh_from_db()
    assert step.state == StepState.QUEUED
    (line,) = [r.getMessage() for r in caplog.records if "could not disarm" in r.getMessage()]
    assert f"step {step.pk} v1 on engine recording" in line and "engine unreachable" in line


def test_a_relaxed_engines_sweep_release_is_info_and_a_missed_timer_a_warning(
    now, engines, published, caplog
):
    relaxed = overdue_step(now, "relaxed")
    with caplog.at_level(logging.INFO, logger="schedules.services.dispatch"):
        assert services.steps_release_overdue(now=now) == 1
    (record,) = [r for r in caplog.records if r.name == "schedules.services.dispatch"]
    assert record.levelno == logging.INFO
    assert "engine relaxed" in record.getMessage() and f"{relaxed.pk} v1" in record.getMessage()

    caplog.clear()
    precise = overdue_step(now)
    with caplog.at_level(logging.INFO, logger="schedules.services.dispatch"):
        assert services.steps_release_overdue(now=now) == 1
    (record,) = [r for r in caplog.records if r.name == "schedules.services.dispatch"]
    assert record.levelno == logging.WARNING
    assert "engine recording" in record.getMessage() and f"{precise.pk} v1" in record.getMessage()


def test_only_the_relaxed_aws_engine_calls_its_sweep_normal():
    from schedules.engines.base import Engine
    from schedules.engines.dynamodb_ttl import DynamoDBTTLEngine
    from schedules.engines.local import LocalEngine
    from schedules.engines.stepfunctions import StepFunctionsEngine

    assert DynamoDBTTLEngine.sweep_release_is_normal is True
    assert Engine.sweep_release_is_normal is False
    assert StepFunctionsEngine.sweep_release_is_normal is False
    assert LocalEngine.sweep_release_is_normal is False
