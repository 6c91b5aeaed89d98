"""Heartbeats: each dispatcher and worker process says it is alive (the health checks).

The dispatcher beats from its own loop, so a beat also says the loop turns; a worker
beats from a thread of its main process (``HeartbeatThread``), started once the
worker is ready. A process that stops cleanly deletes its row; one that dies leaves
it to go stale, and the sweep forgets rows silent for a day.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from ..models import Heartbeat, ProcessRole

logger = logging.getLogger(__name__)

FORGET_AFTER = dt.timedelta(days=1)
#: How the health messages name each role.
ROLE_NAMES = {
    ProcessRole.DISPATCHER: "dispatcher (run_scheduler)",
    ProcessRole.WORKER: "Celery worker",
}


def heartbeat_problem(
    role: str, newest_beat_at: dt.datetime | None, *, now: dt.datetime, newest_name: str = ""
) -> str | None:
    """Why ``role`` counts as down, or None while its newest beat is younger than
    SCHEDULES_HEARTBEAT_STALE_AFTER: the rule of the health checks and of the overview."""
    what = ROLE_NAMES[ProcessRole(role)]
    if newest_beat_at is None:
        return f"no {what} is running (none has written a heartbeat)"
    stale_after: float = settings.SCHEDULES_HEARTBEAT_STALE_AFTER
    age = (now - newest_beat_at).total_seconds()
    if age <= stale_after:
        return None
    newest = f"; the newest was {newest_name}" if newest_name else ""
    return (
        f"no {what} has written a heartbeat for {age:.0f} s (stale after {stale_after:g} s{newest})"
    )


def heartbeat_beat(
    *, name: str, role: str, started_at: dt.datetime, info: dict[str, Any] | None = None
) -> None:
    """Write this process's beat (one statement: an upsert on the name)."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(
        name=name,
        defaults={"role": role, "beat_at": now, "info": info or {}},
        create_defaults={
            "role": role,
            "beat_at": now,
            "info": info or {},
            "started_at": started_at,
        },
    )


def heartbeat_forget(*, name: str) -> None:
    """A clean stop: the process is gone, not stale."""
    Heartbeat.objects.filter(name=name).delete()


def heartbeats_purge(*, now: dt.datetime | None = None) -> int:
    """Forget processes silent for a day (they died without saying so)."""
    now = now or timezone.now()
    deleted, _ = Heartbeat.objects.filter(beat_at__lt=now - FORGET_AFTER).delete()
    return deleted


class HeartbeatThread:
    """Beats every ``every`` seconds from a daemon thread until ``stop()``.

    It uses a database connection of its own (Django's are per thread) and survives a
    database outage: a failed beat is logged and tried again at the next turn.
    """

    def __init__(
        self,
        *,
        name: str,
        role: str,
        every: float,
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.name, self.role, self.every = name, role, every
        self.info = info or dict
        self.started_at = timezone.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{role}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    close_old_connections()
                    heartbeat_beat(
                        name=self.name, role=self.role, started_at=self.started_at, info=self.info()
                    )
                    failures = 0
                except Exception:
                    failures += 1
                    if failures == 1:
                        logger.warning("heartbeat of %s failed", self.name, exc_info=True)
                    connection.close()
                if self._stop.wait(self.every):
                    break
            try:
                heartbeat_forget(name=self.name)
            except Exception:
                logger.warning("could not remove the heartbeat of %s", self.name, exc_info=True)
        finally:
            connection.close()
