"""A Celery worker's heartbeat: its main process beats while it runs (the health check).

Started once the worker is ready to consume, stopped (and the row deleted) when it
shuts down cleanly. Connected by importing this module from scheduler_project/celery.py.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

_beating: list[Any] = []


@worker_ready.connect
def start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    from django.conf import settings

    from schedules.models import ProcessRole
    from schedules.services.heartbeats import HeartbeatThread
    from schedules.services.leases import process_name

    info = {
        "node": getattr(sender, "hostname", ""),
        "concurrency": getattr(getattr(sender, "controller", None), "concurrency", None),
    }
    thread = HeartbeatThread(
        name=process_name("worker"),
        role=ProcessRole.WORKER,
        every=settings.SCHEDULES_HEARTBEAT_INTERVAL,
        info=lambda: info,
    )
    thread.start()
    _beating.append(thread)


@worker_shutdown.connect
def stop_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    while _beating:
        _beating.pop().stop()
