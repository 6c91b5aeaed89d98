"""Housekeeping the dispatcher's sweep runs."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from ..models import IdempotencyRecord


def idempotency_purge_expired(*, now: dt.datetime | None = None) -> int:
    """Forget Idempotency-Keys older than SCHEDULES_IDEMPOTENCY_TTL. Returns how many."""
    deleted, _ = IdempotencyRecord.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted
