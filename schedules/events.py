"""Signals an application connects to, to hear about runs and executions.

Every signal is sent after the transaction that recorded the event has committed,
with ``send_robust``: a receiver that raises is logged and never fails, retries or
delays the job. A receiver runs in the process that recorded the event (a Celery
worker, or the dispatcher for a step it gave up on) and should be quick: queue a
task for anything slow, as the built-in notifiers do (schedules/notifications).

``run_finished``   sender ``Run``; ``run``: the run, once its outcome is recorded
                   (any status: succeeded, failed, retrying, not_done, skipped).
``job_failed``     sender ``Job``; ``job_id``, ``run``: a job's run failed for good
                   (no attempt left, or a permanent error).
``run_uncertain``  sender ``Run``; ``run``: an attempt was lost mid-run and taken
                   over; the action may have had its effect twice.
``execution_failed`` sender ``Execution``; ``execution``: a workflow execution ended
                   failed (its ``state_name``, ``error`` and ``cause`` say where and why).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

run_finished = Signal()
job_failed = Signal()
run_uncertain = Signal()
execution_failed = Signal()


def send_on_commit(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits (now, outside one)."""
    transaction.on_commit(partial(_send, signal, sender, kwargs))


def _send(signal: Signal, sender: Any, kwargs: dict[str, Any]) -> None:
    for receiver, response in signal.send_robust(sender, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "signal receiver %r failed: %s",
                getattr(receiver, "__qualname__", receiver),
                response,
                exc_info=response,
            )
