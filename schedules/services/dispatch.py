"""Releasing due steps of the local engine to the queue, and recovering lost ones."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from ..engines import get_engine
from ..models import Step, StepState

logger = logging.getLogger(__name__)

LOCAL = "local"


def steps_next_due_at() -> dt.datetime | None:
    """Due time of the earliest step waiting in the local engine (one index lookup)."""
    return (
        Step.objects.filter(state=StepState.SCHEDULED, engine=LOCAL)
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first()
    )


def steps_claim_due(*, limit: int, now: dt.datetime | None = None) -> list[tuple[int, int]]:
    """Mark up to ``limit`` due local steps as queued; return their (id, version).

    One short transaction. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several
    dispatchers claim disjoint batches; on SQLite the IMMEDIATE transaction
    serializes them. The caller publishes after the commit.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = Step.objects.filter(
            state=StepState.SCHEDULED, engine=LOCAL, due_at__lte=now
        ).order_by("due_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due.values_list("pk", "version")[:limit])
        if rows:
            Step.objects.filter(pk__in=[pk for pk, _ in rows], state=StepState.SCHEDULED).update(
                state=StepState.QUEUED, queued_at=now
            )
    return rows


def steps_publish(pairs: Sequence[tuple[int, int]]) -> None:
    """Send one ``run_step(step_id, version)`` message per step over one broker connection."""
    if not pairs:
        return
    from workers.tasks import run_step

    with run_step.app.producer_or_acquire() as producer:
        for step_id, version in pairs:
            run_step.apply_async((step_id, version), producer=producer)


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
