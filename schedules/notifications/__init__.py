"""Alerts: the built-in receivers of schedules/events.py and their notifiers (docs/alerts.md).

A receiver runs in the process that recorded the event, after the record committed.
It is quick and never raises: it writes one ``NotificationDelivery`` row per notifier
and target and queues a ``schedules.deliver_notification`` Celery task per row once
that write commits. The task makes the attempts (mail through Django's email backend,
webhooks over HTTP with an HMAC signature), with backoff, and records each on the
row. A notifier that fails or hangs therefore never fails or delays a job's run.

Modules: ``receivers`` (signals to rows), ``payloads`` (what is sent), ``mail`` and
``webhook`` (the notifiers), ``services`` (one attempt, send again, queueing),
``checks`` (the settings, checked by ``manage.py check``).
"""

from __future__ import annotations


def connect() -> None:
    """Connect the receivers and register the system checks (``SchedulesConfig.ready``)."""
    from .. import events
    from . import checks, receivers  # noqa: F401  (checks register themselves)

    events.run_finished.connect(
        receivers.on_run_finished, dispatch_uid="schedules.notifications.run_finished"
    )
    events.job_failed.connect(
        receivers.on_job_failed, dispatch_uid="schedules.notifications.job_failed"
    )
    events.run_uncertain.connect(
        receivers.on_run_uncertain, dispatch_uid="schedules.notifications.run_uncertain"
    )
    events.execution_failed.connect(
        receivers.on_execution_failed, dispatch_uid="schedules.notifications.execution_failed"
    )
