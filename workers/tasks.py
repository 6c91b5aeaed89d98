"""Celery tasks: thin wrappers that receive ids and call a service."""

from __future__ import annotations

import os

from celery import shared_task
from django.db import InterfaceError, OperationalError

from schedules.services import step_execute


@shared_task(
    bind=True,
    name="schedules.run_step",
    acks_late=True,
    # A database hiccup (a lock timeout, a dropped connection) is retried soon;
    # if it persists, the dispatcher's redelivery sweep picks the step up.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def run_step(self, step_id: int, version: int) -> None:  # type: ignore[no-untyped-def]
    """Run one delivery of a step: fence, claim, action, record. The message is ids only."""
    step_execute(
        step_id=int(step_id),
        version=int(version),
        worker=f"{self.request.hostname or 'worker'}:{os.getpid()}",
    )
