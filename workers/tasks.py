"""Celery tasks: thin wrappers that receive ids and call a service."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from schedules.services import step_execute

logger = logging.getLogger(__name__)

#: A database hiccup (a lock timeout, a dropped connection) is retried soon; if it
#: persists, the dispatcher's redelivery sweep picks the step up.
RETRY_OPTIONS: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


def _worker(task: Any) -> str:
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


@shared_task(bind=True, name="schedules.run_step", acks_late=True, **RETRY_OPTIONS)
def run_step(self, step_id: int, version: int) -> None:  # type: ignore[no-untyped-def]
    """Run one delivery of a step: fence, claim, action, record. The message is ids only.

    This is the message the AWS engines send (see docs/aws.md for its format).
    """
    close_old_connections()  # drop a connection that broke or aged out since the last task
    step_execute(step_id=int(step_id), version=int(version), worker=_worker(self))


@shared_task(bind=True, name="schedules.run_steps", acks_late=True, **RETRY_OPTIONS)
def run_steps(self, pairs: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    """Run several steps released together by the local dispatcher, in due order.

    Each step is fenced, claimed and recorded on its own, exactly as ``run_step``
    does. If the database fails mid-way, only the steps not yet run are retried.
    A long chunk hands its rest to a new message before it nears the task's time
    limit, so a slow action never makes later steps hit it.
    """
    close_old_connections()
    worker = _worker(self)
    budget = settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    started = time.monotonic()
    for index, (step_id, version) in enumerate(pairs):
        if index and time.monotonic() - started > budget:
            logger.info("handing %s step(s) to a new message", len(pairs) - index)
            run_steps.apply_async((pairs[index:],))
            return
        try:
            step_execute(step_id=int(step_id), version=int(version), worker=worker)
        except (OperationalError, InterfaceError) as exc:
            close_old_connections()
            # The same backoff as RETRY_OPTIONS gives run_step, for the steps left.
            delay = get_exponential_backoff_interval(
                factor=RETRY_OPTIONS["retry_backoff"],
                retries=self.request.retries,
                maximum=RETRY_OPTIONS["retry_backoff_max"],
                full_jitter=RETRY_OPTIONS["retry_jitter"],
            )
            raise self.retry(args=(pairs[index:],), exc=exc, countdown=delay) from exc
