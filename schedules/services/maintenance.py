"""Housekeeping the dispatcher's sweep runs."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from ..models import IdempotencyRecord


def idempotency_purge_expired(*, now: dt.datetime | None = None) -> int:
    """Forget Idempotency-Keys older than SCHEDULES_IDEMPOTENCY_TTL. Returns how many.

    SCHEDULES_PURGE_BATCH keys per statement, each its own transaction (the sweep runs in
    autocommit), so a backlog of expired keys never holds one long lock on the table.
    """
    cutoff = now or timezone.now()
    batch = settings.SCHEDULES_PURGE_BATCH
    expired = IdempotencyRecord.objects.filter(expires_at__lte=cutoff).order_by("expires_at")
    forgotten = 0
    while True:
        ids = list(expired.values_list("pk", flat=True)[:batch])
        if ids:
            forgotten += IdempotencyRecord.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch:
            return forgotten
