"""The Celery app. Workers run with: celery -A scheduler_project worker"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler_project.settings")

app = Celery("scheduler_project")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure() -> None:
    from django.conf import settings

    app.conf.update(
        # Delivery is at-least-once: a message is acknowledged after the task
        # ran, and requeued if the worker process dies. Fencing and the claim
        # in workers.tasks make the second delivery harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=settings.CELERY_TASK_DEFAULT_QUEUE,
        # One message per pool process, the one it runs: a worker that dies takes no
        # unstarted message with it (the steps of the one it ran are held under a lease,
        # released again by the dispatcher's recovery pass once it lapses).
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Reconnect to a broker that went away for as long as it takes (Celery's default
        # gives up after 100 tries, about 46 minutes, and the worker exits).
        broker_connection_max_retries=None,
        accept_content=["json"],
        task_serializer="json",
    )
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        queue_dir = Path(settings.CELERY_BROKER_DIR)
        for sub in ("queue", "control"):
            (queue_dir / sub).mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport = "workers.broker:Transport"
        app.conf.broker_transport_options = {
            "data_folder_in": str(queue_dir / "queue"),
            "data_folder_out": str(queue_dir / "queue"),
            "control_folder": str(queue_dir / "control"),
            "polling_interval": settings.CELERY_BROKER_POLLING_INTERVAL,
        }
        # The folder transport has no broadcast for remote control.
        app.conf.worker_enable_remote_control = False
    elif settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        # kombu's Redis transport with channels that survive a Redis restart
        # (workers/redis_transport.py says why).
        app.conf.broker_transport = "workers.redis_transport:Transport"
    elif settings.CELERY_BROKER_URL.startswith("sqs://"):
        _configure_sqs(settings)


def _configure_sqs(settings: Any) -> None:
    """The worker consumes the jobs queue that Step Functions sends to."""
    if not settings.SCHEDULES_SQS_QUEUE_URL:
        raise ImproperlyConfigured(
            "CELERY_BROKER_URL is sqs:// but SCHEDULES_SQS_QUEUE_URL is not set "
            "(python manage.py aws_provision prints it)."
        )
    app.conf.broker_transport_options = {
        "region": settings.SCHEDULES_AWS_REGION,
        # Only this queue exists; Celery must not create others.
        "predefined_queues": {
            settings.CELERY_TASK_DEFAULT_QUEUE: {"url": settings.SCHEDULES_SQS_QUEUE_URL},
        },
        "wait_time_seconds": settings.SCHEDULES_SQS_WAIT_TIME_SECONDS,  # long polling
        "polling_interval": 0,
        "visibility_timeout": settings.SCHEDULES_SQS_VISIBILITY_TIMEOUT,
    }
    app.conf.task_create_missing_queues = False
    app.conf.worker_enable_remote_control = False
    # (One message per process also matters here: a received SQS message's visibility
    # clock runs while it waits in the worker.)


_configure()
app.autodiscover_tasks(["workers"])
import workers.heartbeat  # noqa: E402, F401  (the worker's heartbeat, for the health check)
from workers import startup  # noqa: E402, F401  (system checks and logging at start)
