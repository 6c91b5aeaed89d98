"""The local engine's dispatcher loop (``manage.py run_scheduler``).

It claims due steps in batches by the (state, due_at) index, a lookahead
(SCHEDULES_DISPATCH_LOOKAHEAD, default 0.2 s) before they are due, publishes
them to Celery in a few ``run_steps`` messages after the claim commits (the
worker holds each step until its due time), and then sleeps until the next
step comes within the lookahead, but at least half the lookahead after a
release, so that steady traffic goes out in batches. A newly saved earlier
step wakes it: PostgreSQL delivers a NOTIFY, SQLite bumps
``PRAGMA data_version`` on every commit by another connection, which the
dispatcher watches at SCHEDULES_DISPATCH_WAKE_POLL. Memory stays flat: only
one batch of ids is ever held.

A claim carries the dispatcher's name and a short lease (SCHEDULES_DISPATCH_LEASE_SECONDS)
that a keeper thread renews until the publish is done, so the claim of a dispatcher
that dies before publishing lapses and is released again by any live dispatcher.
Every SCHEDULES_RECOVER_INTERVAL (and at start) the recovery pass releases again
the steps whose holder is gone or whose message the broker lost
(``services.steps_recover``). Every SCHEDULES_SWEEP_INTERVAL it also arms steps
that came into the horizon, releases steps overdue on another engine and forgets
expired Idempotency-Keys.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from . import metrics
from .engines.local import WAKE_CHANNEL
from .models import ProcessRole
from .notifications.services import notifications_requeue_stale
from .services import (
    LeaseKeeper,
    idempotency_purge_expired,
    lookahead,
    process_name,
    steps_arm_pending,
    steps_claim_due,
    steps_let_go,
    steps_next_due_at,
    steps_publish,
    steps_recover,
    steps_release_overdue,
    steps_unclaim,
    steps_waiting_report,
)
from .services.dispatch import LOCAL
from .services.heartbeats import heartbeat_beat, heartbeat_forget, heartbeats_purge

logger = logging.getLogger(__name__)

#: Back-off after a failed loop turn (database or broker down): 0.5 s doubling to 30 s.
ERROR_BACKOFF_BASE = 0.5
ERROR_BACKOFF_MAX = 30.0


class Waker:
    """Sleeps up to a timeout, returning early when the database changed or on stop."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; whether the database changed meanwhile (a step may now
        be due earlier than the dispatcher knew)."""
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

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.poll, remaining))
            version = self._version()
            if version != self.version:
                self.version = version
                return True
        return False


class PostgresWaker(Waker):
    """LISTENs on its own connection; the local engine NOTIFYs when it arms a step."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(stop)
        self.wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        self.wrapper.ensure_connection()
        self.raw = self.wrapper.connection
        self.raw.execute(f"LISTEN {WAKE_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Short slices keep the loop responsive to SIGTERM.
            woken = False
            for _ in self.raw.notifies(timeout=min(remaining, 0.5), stop_after=1):
                woken = True
            if woken:
                # Drain a burst of notifications without waiting.
                for _ in self.raw.notifies(timeout=0):
                    pass
                return True
        return False

    def close(self) -> None:
        self.wrapper.close()


@dataclass
class DispatcherStats:
    released: int = 0
    batches: int = 0
    sweeps: int = 0
    recoveries: int = 0
    recovered: int = 0
    wakeups: int = 0
    errors: int = 0
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
        self.name = process_name("dispatcher")
        self.started_at = timezone.now()
        lease: float = settings.SCHEDULES_DISPATCH_LEASE_SECONDS
        self.lease = lease
        self.keeper = LeaseKeeper(self.name, lease=lease, every=lease / 5)

    def _make_waker(self) -> Waker:
        if connection.vendor == "postgresql":
            return PostgresWaker(self.stop)
        if connection.vendor == "sqlite":
            return SQLiteWaker(self.stop, settings.SCHEDULES_DISPATCH_WAKE_POLL)
        raise NotImplementedError(f"no dispatcher wake-up for {connection.vendor}")

    def release_once(self) -> int:
        """Claim and publish one batch of due steps. Returns how many.

        The claim is held under this dispatcher's lease until the publish is done, then
        let go (the steps are in the broker). If the publish fails (the broker is
        down), the claim is given back so the steps are released again as soon as the
        broker answers.
        """
        began = time.perf_counter()
        rows = steps_claim_due(limit=self.batch_size, holder=self.name, lease=self.lease)
        if rows:
            ids = [pk for pk, _ in rows]
            self.keeper.hold(ids)
            try:
                steps_publish(rows)
            except BaseException:
                steps_unclaim(rows)
                raise
            finally:
                self.keeper.release(ids)
            steps_let_go(ids, holder=self.name)
            self.stats.released += len(rows)
            self.stats.batches += 1
            self.stats.last_batch_at = time.monotonic()
            metrics.STEPS_RELEASED.labels(LOCAL).inc(len(rows))
            metrics.DISPATCH_BATCH.observe(len(rows))
            metrics.DISPATCH_SECONDS.observe(time.perf_counter() - began)
            if self.on_batch:
                self.on_batch(len(rows))
        return len(rows)

    def recover(self, *, queued_too_long: bool = False) -> None:
        """Release again the steps whose holder is gone or whose message was lost (and, at
        a sweep, those in the broker for SCHEDULES_REDELIVER_AFTER)."""
        recovered = steps_recover(queued_too_long=queued_too_long)
        self.stats.recoveries += 1
        self.stats.recovered += recovered.total

    def sweep(self) -> None:
        self.recover(queued_too_long=True)
        armed = steps_arm_pending()
        overdue = steps_release_overdue()
        forgotten = idempotency_purge_expired()
        heartbeats_purge()
        notifications_requeue_stale()
        waiting = steps_waiting_report()
        self.stats.sweeps += 1
        if waiting:
            logger.warning("sweep: %s", waiting)
        if armed or overdue or forgotten:
            logger.info(
                "sweep: armed %s step(s), released %s overdue, forgot %s idempotency key(s)",
                armed,
                overdue,
                forgotten,
            )

    def beat(self) -> None:
        """Say this dispatcher is alive (its loop turns): the health check reads it."""
        heartbeat_beat(
            name=self.name,
            role=ProcessRole.DISPATCHER,
            started_at=self.started_at,
            info={
                "released": self.stats.released,
                "batches": self.stats.batches,
                "errors": self.stats.errors,
                "database": connection.vendor,
            },
        )

    def seconds_until_next_due(self) -> float:
        """Until the next step is within the lookahead (when it is claimed and released)."""
        due = steps_next_due_at()
        if due is None:
            return self.max_sleep
        wait = (due - lookahead() - timezone.now()).total_seconds()
        return max(0.0, min(wait, self.max_sleep))

    def run(self) -> None:
        """Release due steps until ``stop`` is set. Survives database and broker outages."""
        waker: Waker | None = None
        next_sweep = next_recover = next_beat = time.monotonic()
        beat_every: float = settings.SCHEDULES_HEARTBEAT_INTERVAL
        next_claim = due_by = 0.0
        recheck = True
        # Steady traffic would otherwise be claimed a few steps at a time, as each
        # crosses into the lookahead. Pausing half the lookahead after a release
        # gathers it into batches; a step is still released half the lookahead early.
        min_gap = settings.SCHEDULES_DISPATCH_LOOKAHEAD / 2
        failures = 0
        logger.info(
            "dispatcher %s started (batch %s, database %s)",
            self.name,
            self.batch_size,
            connection.vendor,
        )
        try:
            while not self.stop.is_set():
                try:
                    if waker is None:
                        waker = self._make_waker()
                    if time.monotonic() >= next_beat:
                        self.beat()
                        next_beat = time.monotonic() + beat_every
                    if time.monotonic() >= next_sweep:
                        self.sweep()  # (with a recovery pass of its own)
                        next_sweep = time.monotonic() + self.sweep_interval
                        next_recover = time.monotonic() + settings.SCHEDULES_RECOVER_INTERVAL
                    if time.monotonic() >= next_recover:
                        self.recover()
                        next_recover = time.monotonic() + settings.SCHEDULES_RECOVER_INTERVAL
                    # The next due time is read again after a change in the database (or
                    # an error), or once it comes: a wake-up for a recovery pass or a sweep
                    # does not read it (on a table without statistics that read is slow).
                    if recheck or time.monotonic() >= due_by:
                        pause = next_claim - time.monotonic()
                        if pause > 0:
                            self.stop.wait(pause)
                        released = self.release_once()
                        if released >= self.batch_size:
                            failures = 0
                            continue  # more are due: no sleep
                        if released:
                            next_claim = time.monotonic() + min_gap
                        due_by = time.monotonic() + self.seconds_until_next_due()
                    recheck = False
                    timeout = min(
                        due_by - time.monotonic(),
                        next_sweep - time.monotonic(),
                        next_recover - time.monotonic(),
                        next_beat - time.monotonic(),
                    )
                    if timeout > 0:
                        recheck = waker.wait(timeout)
                        self.stats.wakeups += 1
                    failures = 0
                except Exception:
                    # A database or broker outage: log, back off, carry on. Nothing claimed
                    # is lost: a failed publish gives its claim back (release_once).
                    failures += 1
                    self.stats.errors += 1
                    metrics.DISPATCHER_ERRORS.inc()
                    delay = min(ERROR_BACKOFF_MAX, ERROR_BACKOFF_BASE * 2 ** (failures - 1))
                    logger.exception(
                        "dispatcher error (%s in a row); retrying in %.1f s", failures, delay
                    )
                    if waker is not None:
                        with contextlib.suppress(Exception):
                            waker.close()
                        waker = None
                    connection.close()  # a fresh connection on the next turn
                    recheck = True
                    self.stop.wait(delay)
        finally:
            if waker is not None:
                waker.close()
            self.keeper.stop()
            with contextlib.suppress(Exception):
                heartbeat_forget(name=self.name)
            logger.info("dispatcher stopped after releasing %s step(s)", self.stats.released)
