from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from schedules.engines import ENGINE_ALIASES, Engine, Timer, TimerStatus, get_engine

pytest_plugins = ["tests.fixtures_aws"]


class RecordingEngine(Engine):
    """A test engine that records every call (the real local engine does no I/O to observe)."""

    calls: list[tuple[str, int, int]] = []
    fail_next: int = 0

    def arm(self, timer: Timer) -> str:
        if RecordingEngine.fail_next:
            RecordingEngine.fail_next -= 1
            raise ConnectionError("engine unavailable")
        RecordingEngine.calls.append(("arm", timer.step_id, timer.version))
        return f"rec:{timer.step_id}:{timer.version}"

    def disarm(self, timer: Timer) -> None:
        RecordingEngine.calls.append(("disarm", timer.step_id, timer.version))

    def describe(self, timer: Timer) -> TimerStatus:
        armed = ("arm", timer.step_id, timer.version) in RecordingEngine.calls
        return TimerStatus(state="waiting" if armed else "absent")


@pytest.fixture
def recording_engine(settings: Any) -> Iterator[type[RecordingEngine]]:
    """Route every precision class to an engine that records arm/disarm calls."""
    ENGINE_ALIASES["recording"] = "tests.conftest.RecordingEngine"
    get_engine.cache_clear()
    settings.SCHEDULES_ENGINES = {
        "seconds": "recording",
        "minute": "recording",
        "relaxed": "recording",
    }
    RecordingEngine.calls = []
    RecordingEngine.fail_next = 0
    yield RecordingEngine
    ENGINE_ALIASES.pop("recording", None)
    get_engine.cache_clear()


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now()


@pytest.fixture
def in_a_minute(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(minutes=1)
