"""The built-in receivers of schedules/events.py: an event becomes delivery rows.

Each receiver is quick (no network): when its event is in SCHEDULES_NOTIFY_EVENTS
and a notifier applies, it reads the job (for its name and webhook_url), writes one
row per notifier and target, and queues their tasks after that write commits. It
never raises: a failure here is logged and the run it reports stays as recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from ..models import (
    Execution,
    Job,
    NotificationDelivery,
    NotificationEvent,
    Notifier,
    Run,
)
from . import payloads
from .services import notifications_queue

logger = logging.getLogger(__name__)

#: Events a mail goes out for (a mail per finished run would bury the failures).
MAIL_EVENTS = frozenset(
    event.value
    for event in (
        NotificationEvent.JOB_FAILED,
        NotificationEvent.RUN_UNCERTAIN,
        NotificationEvent.EXECUTION_FAILED,
    )
)
JOB_FIELDS = ("id", "name", "action", "status", "schedule_type", "max_attempts", "webhook_url")


def targets(event: str, job: Job | None) -> list[tuple[str, str]]:
    """(notifier, target) pairs the settings and the job choose for ``event``, once each."""
    chosen: list[tuple[str, str]] = []
    if event in MAIL_EVENTS:
        chosen += [(Notifier.MAIL.value, name) for name in settings.SCHEDULES_NOTIFY_MAIL]
    urls = [settings.SCHEDULES_NOTIFY_WEBHOOK_URL, job.webhook_url if job is not None else ""]
    chosen += [(Notifier.WEBHOOK.value, url) for url in urls if url]
    return list(dict.fromkeys(chosen))


def _enabled(event: str) -> bool:
    return event in settings.SCHEDULES_NOTIFY_EVENTS


def _may_notify(event: str, job_id: int | None) -> bool:
    """Whether any notifier could apply, without a query (a job may have a webhook)."""
    if not _enabled(event):
        return False
    return bool(
        job_id is not None
        or settings.SCHEDULES_NOTIFY_WEBHOOK_URL
        or (event in MAIL_EVENTS and settings.SCHEDULES_NOTIFY_MAIL)
    )


def _write(
    event: str,
    pairs: list[tuple[str, str]],
    payload: dict[str, Any],
    *,
    job_id: int | None = None,
    run_id: int | None = None,
    execution_id: int | None = None,
) -> list[NotificationDelivery]:
    if not pairs:
        return []
    with transaction.atomic():
        rows = NotificationDelivery.objects.bulk_create(
            [
                NotificationDelivery(
                    event=event,
                    notifier=notifier,
                    target=target,
                    job_id=job_id,
                    run_id=run_id,
                    execution_id=execution_id,
                    payload=payload,
                )
                for notifier, target in pairs
            ]
        )
        notifications_queue(row.pk for row in rows)
    return rows


def notify_run(event: str, run: Run, *, job_id: int | None = None) -> list[NotificationDelivery]:
    """Deliveries for an event about a run (of a job, a classroom or an execution)."""
    job_id = job_id if job_id is not None else run.job_id
    if not _may_notify(event, job_id):
        return []
    job = Job.objects.only(*JOB_FIELDS).filter(pk=job_id).first() if job_id else None
    pairs = targets(event, job)
    if not pairs:
        return []
    payload = payloads.run_payload(event, run, job)
    return _write(
        event, pairs, payload, job_id=job_id, run_id=run.pk, execution_id=run.execution_id
    )


def notify_execution(event: str, execution: Execution) -> list[NotificationDelivery]:
    """Deliveries for an event about a workflow execution."""
    if not _may_notify(event, None):
        return []
    pairs = targets(event, None)
    if not pairs:
        return []
    payload = payloads.execution_payload(event, execution)
    return _write(event, pairs, payload, execution_id=execution.pk)


def _guarded(event: str, what: str, call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(event, *args, **kwargs)
    except Exception:
        logger.exception("alerts: could not record the %s notifications of %s", event, what)


def on_run_finished(sender: Any, *, run: Run, **kwargs: Any) -> None:
    _guarded(NotificationEvent.RUN_FINISHED.value, f"run {run.pk}", notify_run, run)


def on_job_failed(sender: Any, *, job_id: int, run: Run, **kwargs: Any) -> None:
    _guarded(NotificationEvent.JOB_FAILED.value, f"job {job_id}", notify_run, run, job_id=job_id)


def on_run_uncertain(sender: Any, *, run: Run, **kwargs: Any) -> None:
    _guarded(NotificationEvent.RUN_UNCERTAIN.value, f"run {run.pk}", notify_run, run)


def on_execution_failed(sender: Any, *, execution: Execution, **kwargs: Any) -> None:
    _guarded(
        NotificationEvent.EXECUTION_FAILED.value,
        f"execution {execution.pk}",
        notify_execution,
        execution,
    )
