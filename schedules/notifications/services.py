"""Writes on deliveries: one attempt, send again, and queueing their tasks.

An attempt is claimed with one conditional UPDATE on the row's attempt count, so two
deliveries of the same task message (at-least-once) never make the same attempt
twice at once. Each attempt's outcome is written on the row: sent, failed (a final
refusal, or the last of SCHEDULES_NOTIFY_MAX_ATTEMPTS), or pending again with the
time of the next attempt (exponential backoff with jitter).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import DeliveryStatus, NotificationDelivery, Notifier
from . import mail, webhook
from .outcome import Outcome

logger = logging.getLogger(__name__)

#: Longest error kept on a row.
ERROR_CHARS = 2000


def notification_retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: ``c = min(SCHEDULES_NOTIFY_RETRY_MAX,
    SCHEDULES_NOTIFY_RETRY_BASE * 2 ** (attempt - 1))``, drawn from [c/2, c]."""
    base: float = settings.SCHEDULES_NOTIFY_RETRY_BASE
    ceiling = min(float(settings.SCHEDULES_NOTIFY_RETRY_MAX), base * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _attempt(delivery: NotificationDelivery, attempt: int) -> Outcome:
    """Run the delivery's notifier once; whatever it raises is an outcome, never raised."""
    try:
        if delivery.notifier == Notifier.MAIL:
            return mail.send(delivery.target, delivery.payload)
        if delivery.notifier == Notifier.WEBHOOK:
            return webhook.send(
                delivery.target,
                delivery.payload,
                event=delivery.event,
                delivery_id=delivery.pk,
                attempt=attempt,
            )
        return Outcome.failed(f"unknown notifier {delivery.notifier!r}")
    except Exception as exc:
        logger.exception("notification %s: %s raised", delivery.pk, delivery.notifier)
        return Outcome.retry_later(f"{type(exc).__name__}: {exc}")


def notification_deliver(*, delivery_id: int) -> float | None:
    """Make the next attempt of a pending delivery and record it on the row.

    Returns the seconds to wait before the next attempt, or None when there is none
    to make (sent, failed for good, not pending, or another process took this one).
    """
    delivery = NotificationDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    attempt = delivery.attempts + 1
    now = timezone.now()
    claimed = NotificationDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_attempt_at=None)
    if not claimed:
        return None
    outcome = _attempt(delivery, attempt)
    done = timezone.now()
    most: int = settings.SCHEDULES_NOTIFY_MAX_ATTEMPTS
    delay: float | None = None
    changes: dict[str, object] = {
        "response_status": outcome.response_status,
        "last_error": outcome.error[:ERROR_CHARS],
    }
    if outcome.ok:
        changes.update(status=DeliveryStatus.SENT, sent_at=done)
    elif outcome.retry and attempt < most:
        delay = notification_retry_delay(attempt)
        changes["next_attempt_at"] = done + dt.timedelta(seconds=delay)
    else:
        changes["status"] = DeliveryStatus.FAILED
        if outcome.retry:
            changes["last_error"] = f"gave up after {attempt} attempts: {outcome.error}"[
                :ERROR_CHARS
            ]
    NotificationDelivery.objects.filter(pk=delivery.pk, attempts=attempt).update(**changes)
    log = logger.info if outcome.ok else logger.warning
    log(
        "notification %s (%s by %s to %s) attempt %s: %s%s",
        delivery.pk,
        delivery.event,
        delivery.notifier,
        delivery.target,
        attempt,
        "sent" if outcome.ok else outcome.error,
        f"; next attempt in {delay:.1f} s" if delay is not None else "",
    )
    return delay


def notifications_queue(delivery_ids: Iterable[int]) -> None:
    """Queue a delivery task per id once the current transaction commits (now, outside
    one): a rolled-back write queues nothing."""
    ids = [int(pk) for pk in delivery_ids]
    if ids:
        transaction.on_commit(partial(_publish, ids))


def _publish(ids: list[int]) -> None:
    from workers.tasks import deliver_notification  # the worker package imports this one

    queue: str = settings.SCHEDULES_NOTIFY_QUEUE
    for pk in ids:
        try:
            if queue:
                deliver_notification.apply_async((pk,), queue=queue)
            else:
                deliver_notification.apply_async((pk,))
        except Exception:
            # The row stays pending: the admin's "send again" queues it again.
            logger.warning("notification %s: could not queue its task", pk, exc_info=True)


#: A pending delivery untouched this long lost its task (the broker was down when it was
#: queued, or the worker died mid-attempt): the dispatcher's sweep queues it again.
STALE_AFTER = dt.timedelta(minutes=5)


def notifications_requeue_stale(*, now: dt.datetime | None = None, limit: int = 100) -> int:
    """Queue again the pending deliveries whose task was lost (the sweep). A second
    message for a delivery whose task is alive is harmless: an attempt is claimed by
    its number. Returns how many were queued."""
    now = now or timezone.now()
    stale = now - STALE_AFTER
    ids = list(
        NotificationDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .annotate(touched=Coalesce("next_attempt_at", "last_attempt_at", "created_at"))
        .filter(touched__lt=stale)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    if ids:
        logger.warning("queueing %s notification(s) again: their task was lost", len(ids))
        notifications_queue(ids)
    return len(ids)


def notification_resend(*, delivery: NotificationDelivery) -> NotificationDelivery:
    """Send a delivery again from its first attempt (any status): the row is reset to
    pending and its task queued once this commits."""
    with transaction.atomic():
        NotificationDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.PENDING,
            attempts=0,
            last_error="",
            response_status=None,
            next_attempt_at=None,
            sent_at=None,
        )
        notifications_queue([delivery.pk])
    delivery.refresh_from_db()
    return delivery
