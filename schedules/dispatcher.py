"""The local engine's dispatcher loop (``manage.py run_scheduler``).

It claims due steps in batches by the (state, due_at) index, publishes them to
Celery after the claim commits, and then sleeps until the next due time. A
newly saved earlier step wakes it: PostgreSQL delivers a NOTIFY, SQLite bumps
``PRAGMA data_version`` on every commit by another connection, which the
dispatcher watches at SCHEDULES_DISPATCH_WAKE_POLL. Memory stays flat: only
one batch of ids is ever held. Every SCHEDULES_SWEEP_INTERVAL it also arms
steps that came into the horizon, redelivers lost ones and forgets expired
Idempotency-Keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from .engines.local import WAKE_CHANNEL
from .services import (
    idempotency_purge_expired,
    steps_arm_pending,
    steps_claim_due,
    steps_next_due_at,
    steps_publish,
    steps_redeliver_lost,
)

logger = logging.getLogger(__name__)


class Waker:
    """Sleeps up to a timeout, returning early when the database changed or on stop."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def wait(self, timeout: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteWaker(Waker):
    """Watches ``PRAGMA data_version``, which changes when another connection commits."""

    def __init__(self, stop: threading.Event, poll: float) -> None:
        super().__init__(stop)
        self.poll = poll
        self.version = self._version()

    def _version(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            row = cursor.fetchone()
        return int(row[0])

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(self.poll, remaining))
            version = self._version()
            if version != self.version:
                self.version = version
                return


class PostgresWaker(Waker):
    """LISTENs on its own connection; the local engine NOTIFYs when it arms a step."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(stop)
        self.wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        self.wrapper.ensure_connection()
        self.raw = self.wrapper.connection
        self.raw.execute(f"LISTEN {WAKE_CHANNEL}")

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices keep the loop responsive to SIGTERM.
            woken = False
            for _ in self.raw.notifies(timeout=min(remaining, 0.5), stop_after=1):
                woken = True
            if woken:
                # Drain a burst of notifications without waiting.
                for _ in self.raw.notifies(timeout=0):
                    pass
                return

    def close(self) -> None:
        self.wrapper.close()


@dataclass
class DispatcherStats:
    released: int = 0
    batches: int = 0
    sweeps: int = 0
    wakeups: int = 0
    last_batch_at: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        *,
        batch_size: int | None = None,
        max_sleep: float | None = None,
        sweep_interval: float | None = None,
        stop: threading.Event | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.batch_size = batch_size or settings.SCHEDULES_DISPATCH_BATCH
        self.max_sleep = max_sleep or settings.SCHEDULES_DISPATCH_MAX_SLEEP
        self.sweep_interval = sweep_interval or settings.SCHEDULES_SWEEP_INTERVAL
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        self.stats = DispatcherStats()

    def _make_waker(self) -> Waker:
        if connection.vendor == "postgresql":
            return PostgresWaker(self.stop)
        if connection.vendor == "sqlite":
            return SQLiteWaker(self.stop, settings.SCHEDULES_DISPATCH_WAKE_POLL)
        raise NotImplementedError(f"no dispatcher wake-up for {connection.vendor}")

    def release_once(self) -> int:
        """Claim and publish one batch of due steps. Returns how many."""
        rows = steps_claim_due(limit=self.batch_size)
        if rows:
            steps_publish(rows)
            self.stats.released += len(rows)
            self.stats.batches += 1
            self.stats.last_batch_at = time.monotonic()
            if self.on_batch:
                self.on_batch(len(rows))
        return len(rows)

    def sweep(self) -> None:
        armed = steps_arm_pending()
        redelivered = steps_redeliver_lost()
        forgotten = idempotency_purge_expired()
        self.stats.sweeps += 1
        if armed or redelivered or forgotten:
            logger.info(
                "sweep: armed %s step(s), redelivered %s, forgot %s idempotency key(s)",
                armed,
                redelivered,
                forgotten,
            )

    def seconds_until_next_due(self) -> float:
        due = steps_next_due_at()
        if due is None:
            return self.max_sleep
        return max(0.0, min((due - timezone.now()).total_seconds(), self.max_sleep))

    def run(self) -> None:
        waker = self._make_waker()
        next_sweep = time.monotonic()
        logger.info(
            "dispatcher started (batch %s, database %s)", self.batch_size, connection.vendor
        )
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = time.monotonic() + self.sweep_interval
                if self.release_once() >= self.batch_size:
                    continue  # more are due: no sleep
                timeout = min(self.seconds_until_next_due(), next_sweep - time.monotonic())
                if timeout > 0:
                    waker.wait(timeout)
                    self.stats.wakeups += 1
        finally:
            waker.close()
            logger.info("dispatcher stopped after releasing %s step(s)", self.stats.released)
