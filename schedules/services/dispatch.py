"""Releasing due steps of the local engine to the queue, and recovering lost ones."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ..engines import get_engine
from ..models import Step, StepState

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


def steps_claim_due(*, limit: int, now: dt.datetime | None = None) -> list[tuple[int, int]]:
    """Mark up to ``limit`` local steps due by ``now`` + lookahead as queued; return (id, version).

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
    with transaction.atomic():
        due = Step.objects.filter(
            state=StepState.SCHEDULED, engine=LOCAL, due_at__lte=until
        ).order_by("due_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due.values_list("pk", "version")[:limit])
        if rows:
            # By key only: the rows are this transaction's (row locks on PostgreSQL, the
            # write lock on SQLite). A "state = scheduled" term here would make SQLite
            # walk the (state, due_at) index over every pending step instead.
            Step.objects.filter(pk__in=[pk for pk, _ in rows]).update(
                state=StepState.QUEUED, queued_at=now
            )
    return rows


def steps_unclaim(pairs: Sequence[tuple[int, int]]) -> int:
    """Give back a claim whose publish failed: the steps are due again at once.

    Fenced by version and state, so a step changed meanwhile is left alone.
    """
    by_version: dict[int, list[int]] = {}
    for step_id, version in pairs:
        by_version.setdefault(version, []).append(step_id)
    given_back = 0
    with transaction.atomic():
        for version, ids in by_version.items():
            given_back += Step.objects.filter(
                pk__in=ids, version=version, state=StepState.QUEUED
            ).update(state=StepState.SCHEDULED, queued_at=None)
    return given_back


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
            run_steps.apply_async(([[pk, version] for pk, version in chunk],), producer=producer)


def _overdue_on_engines(now: dt.datetime, stale: dt.datetime) -> list[QuerySet[Step]]:
    """Scheduled steps overdue past their engine's bound (the relaxed engine's guarantee)."""
    bounds: dict[str, float] = {}
    for name in set(settings.SCHEDULES_ENGINES.values()):
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


def steps_redeliver_lost(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Republish steps whose message or worker was lost. Returns how many.

    * queued for longer than SCHEDULES_REDELIVER_AFTER and never claimed;
    * held by another engine and overdue by more than that engine's
      ``release_overdue_after`` (Step Functions: SCHEDULES_REDELIVER_AFTER;
      DynamoDB TTL: SCHEDULES_TTL_MAX_LATENESS): its timer failed, is late or
      its message was lost, so the database releases it directly and the
      timer's later message is skipped by fencing;
    * running past their lease (the worker died): the next attempt takes over
      and says the lost one may have had its effect.

    A duplicate this creates is harmless: the worker's claim admits one.
    """
    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.SCHEDULES_REDELIVER_AFTER)
    with transaction.atomic():
        lost = [
            Step.objects.filter(state=StepState.QUEUED, queued_at__lt=stale),
            # (not again until SCHEDULES_REDELIVER_AFTER after the last try)
            Step.objects.filter(state=StepState.RUNNING, lease_until__lt=now).filter(
                Q(queued_at__isnull=True) | Q(queued_at__lt=stale)
            ),
            *_overdue_on_engines(now, stale),
        ]
        rows: list[tuple[int, int]] = []
        for query in lost:
            if connection.features.has_select_for_update_skip_locked:
                query = query.select_for_update(skip_locked=True)
            rows += list(query.values_list("pk", "version")[: max(limit - len(rows), 0)])
        if rows:
            ids = [pk for pk, _ in rows]
            Step.objects.filter(pk__in=ids, state=StepState.SCHEDULED).update(
                state=StepState.QUEUED
            )
            Step.objects.filter(pk__in=ids).update(queued_at=now)
    for step_id, version in rows:
        logger.warning("redelivering step %s v%s (message or worker lost)", step_id, version)
    steps_publish(rows)
    return len(rows)
