"""Releasing due steps of the local engine to the queue, and recovering lost ones."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from .. import metrics
from ..engines import Engine, Timer, configured_engine_names, get_engine
from ..models import Step, StepState
from .transactions import run_retrying

logger = logging.getLogger(__name__)

LOCAL = "local"


def lookahead() -> dt.timedelta:
    """How far ahead of its due time the dispatcher releases a step (the worker holds it).

    Releasing a little early hides the path from the database to the worker (claim,
    broker, pool) behind the wait, so the action starts at its due time, and lets a
    burst travel in few messages.
    """
    return dt.timedelta(seconds=settings.SCHEDULES_DISPATCH_LOOKAHEAD)


def steps_next_due_at() -> dt.datetime | None:
    """Due time of the earliest step waiting in the local engine (one index lookup)."""
    return (
        Step.objects.filter(state=StepState.SCHEDULED, engine=LOCAL)
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first()
    )


def steps_claim_due(
    *, limit: int, holder: str = "", lease: float = 0, now: dt.datetime | None = None
) -> list[tuple[int, int]]:
    """Mark up to ``limit`` local steps due by ``now`` + lookahead as queued; return (id, version).

    The claim carries the dispatcher's name (``holder``) and a lease it renews until the
    publish is done (``leases``): a dispatcher that dies in between leaves a claim that
    lapses, and the next live dispatcher releases it again at once.

    Only when a read says something is due does it open the write transaction (on
    SQLite the write lock is shared by every process). On PostgreSQL ``FOR UPDATE
    SKIP LOCKED`` lets several dispatchers claim disjoint batches; on SQLite the
    IMMEDIATE transaction serializes them. The caller publishes after the commit.
    """
    now = now or timezone.now()
    until = now + lookahead()
    first = steps_next_due_at()
    if first is None or first > until:
        return []

    def claim() -> list[tuple[int, int]]:
        due = Step.objects.filter(
            state=StepState.SCHEDULED, engine=LOCAL, due_at__lte=until
        ).order_by("due_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True, no_key=True)
        rows = list(due.values_list("pk", "version")[:limit])
        if rows:
            # By key only: the rows are this transaction's (row locks on PostgreSQL, the
            # write lock on SQLite). A "state = scheduled" term here would make SQLite
            # walk the (state, due_at) index over every pending step instead.
            Step.objects.filter(pk__in=[pk for pk, _ in rows]).update(
                state=StepState.QUEUED,
                queued_at=now,
                holder=holder,
                lease_until=now + dt.timedelta(seconds=lease) if holder else None,
            )
        return rows

    return run_retrying(claim, what="claiming due steps")


def steps_unclaim(pairs: Sequence[tuple[int, int]]) -> int:
    """Give back a claim whose publish failed: the steps are due again at once.

    Fenced by version and state, so a step changed meanwhile is left alone.
    """
    versions = dict(pairs)

    def unclaim() -> int:
        locked = Step.objects.filter(pk__in=versions, state=StepState.QUEUED).order_by("pk")
        if connection.features.has_select_for_update:
            locked = locked.select_for_update(no_key=True)  # in ascending id (the lock order)
        ids = [pk for pk, version in locked.values_list("pk", "version") if versions[pk] == version]
        return Step.objects.filter(pk__in=ids).update(
            state=StepState.SCHEDULED, queued_at=None, holder="", lease_until=None
        )

    return run_retrying(unclaim, what="giving back a claim")


def chunks(pairs: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a batch (in due order) into messages for ``run_steps``.

    At most SCHEDULES_DISPATCH_CHUNK steps per message, and spread over at least
    SCHEDULES_DISPATCH_SPREAD messages so that several pool processes share a burst;
    steps are dealt round-robin, so each message stays in due order and neighbours
    in time run side by side.
    """
    size: int = settings.SCHEDULES_DISPATCH_CHUNK
    spread: int = settings.SCHEDULES_DISPATCH_SPREAD
    count = min(len(pairs), max(math.ceil(len(pairs) / size), spread))
    return [list(pairs[i::count]) for i in range(count)] if count else []


def steps_publish(pairs: Sequence[tuple[int, int]]) -> None:
    """Send the steps as ``run_steps`` messages (see ``chunks``) over one broker connection.

    A message carries only (step id, version) pairs, like ``run_step``'s.
    """
    if not pairs:
        return
    from workers.tasks import run_steps

    with run_steps.app.producer_or_acquire() as producer:
        for chunk in chunks(pairs):
            run_steps.apply_async(
                ([[pk, version] for pk, version in chunk],),
                producer=producer,
                queue=settings.CELERY_TASK_DEFAULT_QUEUE,  # the queue the recovery pass reads
            )


def _overdue_on_engines(now: dt.datetime, stale: dt.datetime) -> list[QuerySet[Step]]:
    """Scheduled steps overdue past their engine's bound (the relaxed engine's guarantee)."""
    bounds: dict[str, float] = {}
    for name in configured_engine_names():
        after = get_engine(name).release_overdue_after
        if after is not None:
            bounds[name] = after
    scheduled = Step.objects.filter(state=StepState.SCHEDULED)
    queries = [
        scheduled.filter(engine=name, due_at__lt=now - dt.timedelta(seconds=after))
        for name, after in bounds.items()
    ]
    # Steps left on an engine that is no longer configured.
    queries.append(scheduled.filter(due_at__lt=stale).exclude(engine__in=[LOCAL, *bounds]))
    return queries


def _take(
    queries: Sequence[QuerySet[Step]], limit: int, fields: Sequence[str] = ("pk", "version")
) -> list[tuple[Any, ...]]:
    """``fields`` (default: id, version) of up to ``limit`` steps matching ``queries``, locked,
    skipping locked ones (a lock that never waits needs no order, and no sort stops the scan
    at ``limit``)."""
    rows: list[tuple[Any, ...]] = []
    for query in queries:
        if len(rows) >= limit:
            break
        if connection.features.has_select_for_update_skip_locked:
            query = query.select_for_update(skip_locked=True, no_key=True)
        rows += list(query.order_by().values_list(*fields)[: limit - len(rows)])
    return rows


#: What the sweep reads of a step it releases: enough to disarm the step's timer.
OVERDUE_FIELDS = ("pk", "version", "due_at", "engine", "external_ref", "armed_version")
#: Step ids named in one log line about the sweep's releases.
LOGGED_IDS = 20


def _engine_or_none(name: str) -> Engine | None:
    """The engine of that name, or None if it cannot be built (no longer configured)."""
    try:
        return get_engine(name)
    except Exception:  # noqa: BLE001 - ImproperlyConfigured, or a failing constructor
        return None


def _by_engine(timers: Sequence[Timer]) -> dict[str, list[Timer]]:
    grouped: dict[str, list[Timer]] = {}
    for timer in timers:
        grouped.setdefault(timer.engine, []).append(timer)
    return grouped


def _step_list(timers: Sequence[Timer]) -> str:
    named = ", ".join(f"{t.step_id} v{t.version}" for t in timers[:LOGGED_IDS])
    return named + (f" and {len(timers) - LOGGED_IDS} more" if len(timers) > LOGGED_IDS else "")


def _log_overdue(timers: Sequence[Timer]) -> None:
    """One line per engine: INFO where the sweep is part of the engine's guarantee (DynamoDB
    TTL fires when DynamoDB gets to it), WARNING where the engine should have released the
    step by now (its timer failed, was late or its message was lost)."""
    for name, released in _by_engine(timers).items():
        engine = _engine_or_none(name)
        if engine is not None and engine.sweep_release_is_normal:
            logger.info(
                "released %s step(s) of engine %s from the database, past its bound "
                "(%.0f s after the due time): %s",
                len(released),
                name,
                engine.release_overdue_after or 0,
                _step_list(released),
            )
        else:
            logger.warning(
                "released %s step(s) overdue on engine %s (its timer failed, was late or "
                "its message was lost): %s",
                len(released),
                name,
                _step_list(released),
            )


def _disarm_released(timers: Sequence[Timer]) -> None:
    """Remove the timers of steps the sweep released, so they send no duplicate message.

    Best effort, after the commit: a failure is logged and is not fatal (the worker's
    fencing skips the duplicate). Engines whose timer is the step row are left alone.
    """
    for name, released in _by_engine(timers).items():
        try:
            engine = get_engine(name)
        except Exception as exc:  # noqa: BLE001 - an engine no longer configured
            logger.warning(
                "cannot disarm the timers of step(s) %s released by the sweep: engine %s: %s",
                _step_list(released),
                name,
                exc,
            )
            continue
        if engine.row_is_timer:
            continue
        for timer in released:
            try:
                engine.disarm(timer)
            except Exception as exc:  # noqa: BLE001 - logged; fencing protects the step
                logger.warning(
                    "could not disarm the timer of step %s v%s on engine %s after the sweep "
                    "released it: %s (its late message will be skipped by the worker)",
                    timer.step_id,
                    timer.version,
                    name,
                    exc,
                )


def steps_release_overdue(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Release steps another engine holds that are overdue past its bound. Returns how many.

    ``release_overdue_after`` of the engine (Step Functions: SCHEDULES_REDELIVER_AFTER;
    DynamoDB TTL: SCHEDULES_TTL_MAX_LATENESS): its timer failed, is late or its message
    was lost, so the database releases the step directly. After the commit and the
    publish, the released steps' timers are disarmed on their engine (best effort), so a
    relaxed step's TTL item does not send a duplicate later; a timer that still fires is
    skipped by fencing.
    """
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.SCHEDULES_REDELIVER_AFTER)

    def release() -> list[tuple[Any, ...]]:
        rows = _take(_overdue_on_engines(now, stale), limit, OVERDUE_FIELDS)
        Step.objects.filter(pk__in=[row[0] for row in rows]).update(
            state=StepState.QUEUED, queued_at=now
        )
        return rows

    rows = run_retrying(release, what="releasing overdue steps")
    timers = [
        Timer(
            step_id=pk,
            version=version,
            due_at=due_at,
            engine=engine,
            # The reference names this version's timer only if this version was armed.
            external_ref=ref if armed_version == version else "",
        )
        for pk, version, due_at, engine, ref, armed_version in rows
    ]
    if timers:
        _log_overdue(timers)
        metrics.STEPS_RELEASED_OVERDUE.inc(len(timers))
    steps_publish([(t.step_id, t.version) for t in timers])
    _disarm_released(timers)
    return len(timers)


@dataclass(frozen=True)
class Recovered:
    """What one recovery pass released again, by cause."""

    holder_gone: int = 0  # held by a process whose lease lapsed (taken over if running)
    lost_in_broker: int = 0  # in the broker while its queue was empty
    queued_too_long: int = 0  # in the broker for SCHEDULES_REDELIVER_AFTER

    @property
    def total(self) -> int:
        return self.holder_gone + self.lost_in_broker + self.queued_too_long


def broker_queue_length() -> int | None:
    """How many messages wait in the workers' queue (None: the broker did not say).

    A queue the broker does not know (Redis drops an empty list; a restarted Redis
    without persistence has none) is empty.
    """
    from kombu.exceptions import ChannelError, OperationalError

    from workers.tasks import run_steps

    queue: str = settings.CELERY_TASK_DEFAULT_QUEUE
    try:
        with run_steps.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            channel: Any = conn.default_channel  # (kombu's stubs lack queue_declare)
            _name, count, _consumers = channel.queue_declare(queue=queue, passive=True)
    except ChannelError as exc:
        if "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower():
            return 0
        logger.info("could not read the length of queue %s: %s", queue, exc)
        return None
    except (OperationalError, OSError) as exc:
        logger.info("could not read the length of queue %s: %s", queue, exc)
        return None
    return int(count)


def broker_queue_empty() -> bool | None:
    """Whether the workers' queue holds no message (None: the broker did not say)."""
    length = broker_queue_length()
    return None if length is None else length == 0


def steps_waiting_report(
    *, now: dt.datetime | None = None, queue_length: Callable[[], int | None] = broker_queue_length
) -> str:
    """One line for the sweep's log when steps wait in the broker past the grace while its
    queue is not empty: nothing consumes it (no worker, or workers on another queue). ''
    when nothing waits."""
    now = now or timezone.now()
    grace: float = settings.SCHEDULES_LOST_MESSAGE_GRACE
    waiting = Step.objects.filter(
        state=StepState.QUEUED, holder="", queued_at__lt=now - dt.timedelta(seconds=grace)
    )
    oldest = waiting.order_by("queued_at").values_list("queued_at", flat=True).first()
    if oldest is None:
        return ""
    length = queue_length()
    if not length:
        return ""  # an empty queue: the recovery pass publishes them again
    return (
        f"{waiting.count()} step(s) have waited in the broker for over {grace:.0f} s (the "
        f"oldest {(now - oldest).total_seconds():.0f} s) and queue "
        f"{settings.CELERY_TASK_DEFAULT_QUEUE!r} holds {length} message(s): is a worker "
        "consuming it?"
    )


def steps_recover(
    *,
    now: dt.datetime | None = None,
    limit: int = 1000,
    queue_empty: Callable[[], bool | None] = broker_queue_empty,
    queued_too_long: bool = True,
) -> Recovered:
    """Release again the steps in flight that nothing will run (invariant 10).

    * **Holder gone**: a step whose holder (a dispatcher that had not published it, a
      worker that had taken its message or was running it) let its lease lapse: the
      process is dead. Queued: published again. Running: published for a takeover (the
      worker's claim takes over and marks the run uncertain if the action has effects).
    * **Lost in the broker**: a step in the broker (published, nobody holds it) for
      SCHEDULES_LOST_MESSAGE_GRACE while the workers' queue is empty: its message was
      lost (a broker restart without persistence, a worker that died holding it
      unstarted). The broker's queue length is asked only when such steps exist.
    * **Queued too long** (unless ``queued_too_long`` is false: the dispatcher looks for
      these at its sweeps only, as it reads every step in the broker): in the broker for
      SCHEDULES_REDELIVER_AFTER although the queue is not empty (a fallback for a loss
      hidden behind a long backlog).

    A duplicate this creates is harmless: the worker's claim admits one delivery.
    """
    now = now or timezone.now()
    in_flight = (StepState.QUEUED, StepState.RUNNING)
    # In the broker, held by nobody: queued (an unheld queued step has no lease), or
    # running under a lapsed lease (published again for a takeover). One query per state,
    # so that SQLite seeks the (state, due_at) index instead of reading the table.
    unheld = [
        Step.objects.filter(state=StepState.QUEUED, holder=""),
        Step.objects.filter(state=StepState.RUNNING, holder="", lease_until__lt=now),
    ]
    grace = now - dt.timedelta(seconds=settings.SCHEDULES_LOST_MESSAGE_GRACE)
    stale = now - dt.timedelta(seconds=settings.SCHEDULES_REDELIVER_AFTER)
    suspects = [query.filter(queued_at__lt=grace) for query in unheld]
    lapsed = Step.objects.filter(lease_until__lt=now, state__in=in_flight).exclude(holder="")
    empty = queue_empty() if any(query.exists() for query in suspects) else None
    # Reads first: the write transaction (SQLite's one write lock) only when there is work.
    if not (empty or queued_too_long or lapsed.exists()):
        return Recovered()

    def recover() -> tuple[list[tuple[int, int]], Recovered]:
        gone = _take([lapsed], limit)
        if empty:
            lost = _take(suspects, limit)
        elif queued_too_long:
            lost = _take([query.filter(queued_at__lt=stale) for query in unheld], limit)
        else:
            lost = []
        gone_ids = [pk for pk, _ in gone]
        # Back in the broker, held by nobody; a running step keeps its lapsed lease, which
        # is what lets the next delivery take it over.
        Step.objects.filter(pk__in=gone_ids, state=StepState.QUEUED).update(lease_until=None)
        Step.objects.filter(pk__in=gone_ids + [pk for pk, _ in lost]).update(
            holder="", queued_at=now
        )
        counts = Recovered(
            holder_gone=len(gone),
            lost_in_broker=len(lost) if empty else 0,
            queued_too_long=0 if empty else len(lost),
        )
        return gone + lost, counts

    rows, counts = run_retrying(recover, what="recovering steps in flight")
    if rows:
        logger.warning(
            "recovery: released again %s step(s): %s whose holder is gone, %s lost in the "
            "broker (queue empty), %s queued for over %s s",
            counts.total,
            counts.holder_gone,
            counts.lost_in_broker,
            counts.queued_too_long,
            settings.SCHEDULES_REDELIVER_AFTER,
        )
        steps_publish(rows)
    return counts
