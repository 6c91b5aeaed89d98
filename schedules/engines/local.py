"""The embedded engine: the step row is the timer.

``run_scheduler`` (schedules.dispatcher) releases due rows to Celery. Arming a
step only wakes the dispatcher so that an earlier due time is noticed at once:
on PostgreSQL with NOTIFY, on SQLite by the commit itself (the dispatcher
watches ``PRAGMA data_version``).
"""

from __future__ import annotations

from django.db import connection

from ..models import Step, StepState
from .base import Engine, Timer, TimerStatus

WAKE_CHANNEL = "schedules_wake"


def wake_dispatchers() -> None:
    """Tell sleeping dispatchers to look at the next due time again."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [WAKE_CHANNEL])


class LocalEngine(Engine):
    name = "local"
    row_is_timer = True

    @property
    def release_overdue_after(self) -> float | None:
        return None  # the dispatcher releases local steps itself

    @property
    def expected_lateness(self) -> str:
        return "milliseconds (see docs/benchmarks.md)"

    def arm(self, timer: Timer) -> str:
        # The row is the timer, so arming twice is one timer by construction.
        wake_dispatchers()
        return ""

    def arm_many(self, timers: list[Timer]) -> dict[int, str | Exception]:
        if timers:
            wake_dispatchers()  # one wake-up for the whole batch
        return dict.fromkeys((t.step_id for t in timers), "")

    def disarm(self, timer: Timer) -> None:
        # A cancelled or rescheduled row is no longer selected as due.
        return None

    def describe(self, timer: Timer) -> TimerStatus:
        row = Step.objects.filter(pk=timer.step_id).values("state", "version", "due_at").first()
        if row is None or row["version"] != timer.version:
            return TimerStatus(state="absent", detail="no such step version")
        if row["state"] == StepState.SCHEDULED:
            return TimerStatus(state="waiting", detail=f"due at {row['due_at'].isoformat()}")
        if row["state"] == StepState.CANCELLED:
            return TimerStatus(state="stopped", detail="cancelled")
        return TimerStatus(state="released", detail=row["state"])
