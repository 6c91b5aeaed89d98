"""Celery tasks: thin wrappers that receive ids and call a service."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from schedules.services import (
    LeaseKeeper,
    lease_keeper,
    step_execute,
    steps_execute,
    steps_hold,
    steps_let_go,
)

logger = logging.getLogger(__name__)


def _worker(task: Any) -> str:
    """This pool process as a holder: the worker's node name and the process id."""
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


def _keeper(holder: str) -> LeaseKeeper:
    """This process's lease keeper: renews every quarter of SCHEDULES_LEASE_SECONDS."""
    lease: float = settings.SCHEDULES_LEASE_SECONDS
    return lease_keeper(holder, lease=lease, every=lease / 4)


@shared_task(bind=True, name="schedules.run_step", acks_late=True)
def run_step(self, step_id: int, version: int) -> None:  # type: ignore[no-untyped-def]
    """Run one delivery of a step: fence, claim, action, record. The message is ids only.

    This is the message the AWS engines send (see docs/aws.md for its format). A
    database failure is retried inside ``step_execute`` (the action never twice).
    """
    close_old_connections()  # drop a connection that broke or aged out since the last task
    worker = _worker(self)
    step_execute(step_id=int(step_id), version=int(version), worker=worker, keeper=_keeper(worker))


@shared_task(bind=True, name="schedules.run_steps", acks_late=True)
def run_steps(self, pairs: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    """Run several steps released together by the local dispatcher, in due order.

    The process holds the message's steps from the start (``steps_hold``), under a lease
    it renews while it lives, so if it dies the recovery pass releases them again within
    a lease instead of waiting for the broker. The steps due together are claimed and
    recorded together, with the fences ``run_step`` applies to one (``steps_execute``); a
    database failure is retried in place. A long chunk hands its rest to a new message
    before it nears the task's time limit, so a slow action never makes later steps hit it.
    """
    close_old_connections()
    worker = _worker(self)
    keeper = _keeper(worker)
    try:
        keeper.hold(steps_hold(pairs, holder=worker, lease=settings.SCHEDULES_LEASE_SECONDS))
    except Exception:
        logger.warning("could not hold %s step(s) before running them", len(pairs), exc_info=True)
        close_old_connections()
    deadline = time.monotonic() + settings.CELERY_TASK_SOFT_TIME_LIMIT / 2
    try:
        rest = steps_execute(pairs=pairs, worker=worker, keeper=keeper, deadline=deadline)
        if rest:
            logger.info("handing %s step(s) to a new message", len(rest))
            run_steps.apply_async(([list(pair) for pair in rest],))
            steps_let_go([pk for pk, _ in rest], holder=worker)
    finally:
        # Whatever is left (the database stayed away): its lease lapses and the recovery
        # pass releases it again.
        keeper.release(pk for pk, _ in pairs)


@shared_task(bind=True, name="schedules.deliver_notification", acks_late=True)
def deliver_notification(self, delivery_id: int) -> None:  # type: ignore[no-untyped-def]
    """Make the next attempt of one alert delivery (schedules/notifications), recorded on
    its row; retried with backoff until SCHEDULES_NOTIFY_MAX_ATTEMPTS. A job's run never
    waits on this task: it is queued after the run was recorded."""
    from schedules.notifications.services import notification_deliver

    close_old_connections()
    delay = notification_deliver(delivery_id=int(delivery_id))
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)
