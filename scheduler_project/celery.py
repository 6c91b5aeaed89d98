"""The Celery app. Workers run with: celery -A scheduler_project worker"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

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
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
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


_configure()
app.autodiscover_tasks(["workers"])
