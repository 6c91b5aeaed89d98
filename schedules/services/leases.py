"""Who holds a step in flight, and for how long (invariant 10).

A step on its way to a run is held by one live process at a time: the
dispatcher from its claim until the publish is done, then a worker from the
moment it starts the message that carries the step until it has recorded the
run. The holder writes its name in ``holder`` and a deadline in ``lease_until``;
a ``LeaseKeeper`` thread in the process pushes the deadline on every quarter of
the lease while the process lives, so a ten-minute action keeps a 15-second
lease. A process that dies stops renewing: once its leases lapse, the
dispatcher's recovery pass (``dispatch.steps_recover``) releases its steps again
(a running one is taken over, its new run marked uncertain when the action has
outside effects). The steps of a live process are never touched.

Several steps are locked in ascending id, like everywhere else (the lock order in
docs/architecture.md); the periodic writes here skip a row another transaction
holds rather than wait for it (the next renewal gets it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence

from django.db import connection
from django.utils import timezone

from ..models import Step, StepState
from .rows import to_db

logger = logging.getLogger(__name__)

STEP_TABLE = Step._meta.db_table
IN_FLIGHT = (StepState.QUEUED.value, StepState.RUNNING.value)


def process_name(role: str) -> str:
    """A name for this process as a holder: role, host and process id."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


def locked_in_order(where: str, *, skip_locked: bool = False) -> str:
    """``id IN (…)`` over the steps matching ``where``, locked in ascending id (PostgreSQL).

    On SQLite the write transaction already excludes every other writer.
    """
    if not connection.features.has_select_for_no_key_update:
        return where
    skip = " SKIP LOCKED" if skip_locked else ""
    return f"id IN (SELECT id FROM {STEP_TABLE} WHERE {where} ORDER BY id FOR NO KEY UPDATE{skip})"


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def steps_hold(pairs: Sequence[Sequence[int]], *, holder: str, lease: float) -> list[int]:
    """A worker starts a message: it holds the message's steps that are queued at the
    version the message carries. Returns the ids it now holds."""
    if not pairs:
        return []
    until = to_db(Step, "lease_until", timezone.now() + dt.timedelta(seconds=lease))
    ids = [int(pk) for pk, _version in pairs]
    values = ", ".join(["(%s, %s)"] * len(pairs))
    # "id IN" first: it lets SQLite find the rows by key; the pairs alone would have it
    # walk the state index over every queued step.
    where = (
        f"id IN ({placeholders(len(ids))}) AND (id, version) IN (VALUES {values}) AND state = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET holder = %s, lease_until = %s "
            f"WHERE {locked_in_order(where, skip_locked=True)} RETURNING id",
            [
                holder,
                until,
                *ids,
                *(int(n) for pair in pairs for n in pair),
                StepState.QUEUED.value,
            ],
        )
        return [pk for (pk,) in cursor.fetchall()]


def steps_renew(ids: Iterable[int], *, holder: str, lease: float) -> int:
    """Push the lease of the steps ``holder`` still holds. Returns how many it holds."""
    ids = sorted(set(ids))
    if not ids:
        return 0
    until = to_db(Step, "lease_until", timezone.now() + dt.timedelta(seconds=lease))
    where = f"id IN ({placeholders(len(ids))}) AND holder = %s AND state IN (%s, %s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET lease_until = %s "
            f"WHERE {locked_in_order(where, skip_locked=True)}",
            [until, *ids, holder, *IN_FLIGHT],
        )
        return int(cursor.rowcount)


def steps_let_go(ids: Iterable[int], *, holder: str) -> int:
    """Queued steps ``holder`` held are in the broker now (published, or handed to a new
    message): nobody holds them, and their time in the queue starts now."""
    ids = sorted(set(ids))
    if not ids:
        return 0
    now = to_db(Step, "queued_at", timezone.now())
    where = f"id IN ({placeholders(len(ids))}) AND holder = %s AND state = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {STEP_TABLE} SET holder = '', lease_until = NULL, queued_at = %s "
            f"WHERE {locked_in_order(where, skip_locked=False)}",
            [now, *ids, holder, StepState.QUEUED.value],
        )
        return int(cursor.rowcount)


class LeaseKeeper:
    """Renews, from a background thread, the leases of the steps this process holds.

    ``hold`` and ``release`` say which steps; the thread renews them every ``every``
    seconds for ``lease`` seconds more, on its own database connection. A failed
    renewal is logged and tried again at the next turn (a lease outlasts three).
    """

    def __init__(self, holder: str, *, lease: float, every: float) -> None:
        self.holder = holder
        self.lease = lease
        self.every = every
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._held.update(ids)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"lease-keeper {self.holder}", daemon=True
                )
                self._thread.start()

    def release(self, ids: Iterable[int]) -> None:
        with self._lock:
            self._held.difference_update(ids)

    @property
    def held(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._held)

    def renew(self) -> int:
        """Renew now (the thread's turn). Returns how many steps the holder still holds."""
        held = self.held
        return steps_renew(held, holder=self.holder, lease=self.lease) if held else 0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    self.renew()
                except Exception:
                    logger.warning(
                        "%s: renewing the lease of %s step(s) failed; trying again in %.1f s",
                        self.holder,
                        len(self.held),
                        self.every,
                        exc_info=True,
                    )
                    connection.close()
        finally:
            connection.close()


_keepers: dict[tuple[int, str], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def lease_keeper(holder: str, *, lease: float, every: float) -> LeaseKeeper:
    """This process's keeper for ``holder`` (one per process: a forked child gets its own)."""
    key = (os.getpid(), holder)
    with _keepers_lock:
        keeper = _keepers.get(key)
        if keeper is None:
            keeper = _keepers[key] = LeaseKeeper(holder, lease=lease, every=every)
        return keeper
