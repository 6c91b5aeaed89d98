"""The engine interface: a small set of primitives every timer engine implements.

An engine holds timers, never data. A timer releases the message
``{step_id, version}`` to the jobs queue at the step's due time.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Timer:
    """What an engine needs to know about a step: ids, version, time. No payload."""

    step_id: int
    version: int
    due_at: dt.datetime
    engine: str
    external_ref: str = ""


class TimerNameSpent(Exception):
    """The engine holds a closed timer (stopped, failed) under this step version's name.

    Such a name cannot be armed again; the step must move to a new version, whose
    timer has a new name (``steps_sync`` does this).
    """


@dataclass
class TimerStatus:
    """What an engine says about one timer (for the admin and reconcile)."""

    state: str  # "waiting", "released", "absent", "failed", "stopped" or engine-specific
    detail: str = ""
    url: str = ""


@dataclass
class ReconcilePlan:
    """Differences between the database's steps and the engine's timers."""

    missing: list[Timer] = field(default_factory=list)  # in the database, not in the engine
    orphans: list[str] = field(default_factory=list)  # in the engine, not wanted by the database


class Engine(abc.ABC):
    """Base class of the engines. ``arm`` must be idempotent for one step version."""

    #: Name under which the engine is selected in SCHEDULES_ENGINES.
    name: str = ""
    #: The step row itself is the timer (the local engine): a step written in a
    #: transaction is armed by its commit and gone with its rollback, so it may be
    #: written armed in that transaction instead of synced after the commit.
    row_is_timer: bool = False
    #: The overdue sweep releasing this engine's steps is part of its normal working (a
    #: relaxed engine whose timers may fire after its bound, DynamoDB TTL), logged at
    #: INFO. False: the engine should have released the step by then (its timer failed,
    #: was late or its message was lost), logged as a WARNING.
    sweep_release_is_normal: bool = False
    #: The finest precision class the engine meets (seconds, minute or relaxed): it
    #: serves that class and every coarser one (``auto`` in SCHEDULES_ENGINES).
    precision: str = "seconds"
    #: List price in USD to arm and release one step: the engine's own requests and the
    #: SQS send of its message (docs/aws.md, "Choosing an engine"). 0 for engines that
    #: run on your own servers. SCHEDULES_ENGINE_PRICES overrides it.
    list_price: Decimal = Decimal(0)
    #: Settings that must be set for the engine to work; ``auto`` only picks an engine
    #: whose settings are all set.
    required_settings: tuple[str, ...] = ()

    @classmethod
    def is_configured(cls) -> bool:
        """Every setting the engine needs is set (not empty)."""
        from django.conf import settings

        return all(getattr(settings, name, "") for name in cls.required_settings)

    @property
    def release_overdue_after(self) -> float | None:
        """Seconds past due after which the sweep releases a step from the database.

        ``None`` for engines the dispatcher itself drives (local).
        """
        from django.conf import settings

        return float(settings.SCHEDULES_REDELIVER_AFTER)

    @property
    def expected_lateness(self) -> str:
        """What an operator can expect of this engine, in words (shown in the admin)."""
        return "under a second"

    @abc.abstractmethod
    def arm(self, timer: Timer) -> str:
        """Create the timer for this step version; return its external reference.

        Arming the same step version twice must leave one timer.
        """

    @abc.abstractmethod
    def disarm(self, timer: Timer) -> None:
        """Remove the timer. A timer that is already gone or fired is not an error."""

    def arm_many(self, timers: list[Timer]) -> dict[int, str | Exception]:
        """Arm several timers; per step id, the external reference or the error.

        Engines with a batch API override this; the default arms one by one.
        """
        results: dict[int, str | Exception] = {}
        for timer in timers:
            try:
                results[timer.step_id] = self.arm(timer)
            except Exception as exc:  # noqa: BLE001 - reported per timer to the caller
                results[timer.step_id] = exc
        return results

    @abc.abstractmethod
    def describe(self, timer: Timer) -> TimerStatus:
        """Report the timer's state as the engine sees it."""

    def reconcile(self, wanted: list[Timer]) -> ReconcilePlan:
        """Compare the timers the database wants with those the engine holds.

        The default suits engines whose timers can be described one by one.
        """
        plan = ReconcilePlan()
        for timer in wanted:
            if self.describe(timer).state == "absent":
                plan.missing.append(timer)
        return plan

    def console_url(self, timer: Timer) -> str:
        """A link to the timer in the engine's console, if it has one."""
        return ""

    def list_timers(self) -> Iterator[Timer]:
        """Every timer the engine holds now, read page by page (for reconcile's orphans).

        The default yields nothing: engines whose timers are the database rows
        (local) hold no separate timers that could be orphaned.
        """
        yield from ()
