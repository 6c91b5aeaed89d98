"""Transactions that survive a conflict the database reports (invariant 8).

Every transaction that locks more than one row takes them in one order, written
down in docs/architecture.md ("One lock order"): the owner (a job or a
classroom) first, then its steps in ascending id, then runs. So the database
should never have to break a deadlock between two of our own transactions. If
it still reports a conflict (a deadlock with something else, a serialization
failure, SQLite's lock timeout), nothing of the transaction was written, and the
outermost transaction is run again here, a few times with a growing, jittered
pause. A caller sees the result, or ``Busy`` (nothing written, try again later),
never a raw ``OperationalError``.

Only the outermost transaction can be retried: a service called inside another
transaction (the admin's change form, an API view that calls two services)
leaves the retry to the code that opened it, which uses ``run_retrying`` too.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import OperationalError, connection, transaction

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: PostgreSQL's codes for "run it again": deadlock_detected, serialization_failure.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}
#: SQLite's words for a write lock it could not get within its timeout.
SQLITE_CONFLICTS = ("database is locked", "database table is locked")


class Busy(Exception):
    """The database kept reporting a conflict; nothing was written. Safe to try again."""

    def __init__(self, attempts: int, reason: str) -> None:
        self.attempts = attempts
        self.reason = reason
        super().__init__(
            f"the database reported a {reason} {attempts} times in a row; nothing was "
            "changed. Try again in a moment."
        )


def conflict_reason(exc: BaseException) -> str:
    """What conflict ``exc`` is ('deadlock', ...), or '' if it is some other error."""
    seen: BaseException | None = exc
    while seen is not None:
        sqlstate = getattr(seen, "sqlstate", None)
        if sqlstate in CONFLICT_SQLSTATES:
            return CONFLICT_SQLSTATES[sqlstate]
        if connection.vendor == "sqlite" and any(text in str(seen) for text in SQLITE_CONFLICTS):
            return "lock timeout"
        seen = seen.__cause__
    return ""


def conflict_pause(attempt: int) -> float:
    """Seconds before try ``attempt + 1``: from about 50 ms, doubling, jittered, at most 2 s."""
    ceiling: float = min(2.0, 0.05 * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def run_retrying(func: Callable[[], T], *, what: str = "", atomic: bool = True) -> T:
    """``func()`` in a transaction; run again on a conflict when this is the outermost one.

    Inside another transaction it is a savepoint and a conflict propagates to the
    outer transaction's owner, which is the one that can run it all again. With
    ``atomic=False`` (outside any transaction only), ``func`` runs one statement,
    which is its own transaction: no BEGIN and COMMIT round trips.
    """
    if connection.in_atomic_block:
        with transaction.atomic():
            return func()
    tries: int = settings.SCHEDULES_CONFLICT_RETRIES
    for attempt in range(1, tries + 1):
        try:
            if not atomic:
                return func()
            with transaction.atomic():
                return func()
        except OperationalError as exc:
            reason = conflict_reason(exc)
            if not reason:
                raise
            if attempt == tries:
                logger.error("%s: %s %s times in a row; giving up", what, reason, attempt)
                raise Busy(attempt, reason) from exc
            pause = conflict_pause(attempt)
            logger.warning(
                "%s: %s reported by the database (try %s of %s); running it again in %.2f s",
                what or getattr(func, "__name__", "transaction"),
                reason,
                attempt,
                tries,
                pause,
            )
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def retrying(func: Callable[P, T]) -> Callable[P, T]:
    """Decorator: the service runs in a transaction, retried on a conflict (``run_retrying``).

    Use it instead of ``transaction.atomic`` on every service that writes.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_retrying(lambda: func(*args, **kwargs), what=func.__name__)

    return wrapper
