"""What a Celery worker does before it consumes: run the system checks, keep Django's logs.

* ``celeryd_init``: the system checks ``manage.py`` commands run (an unknown engine, a
  recording service outside its allow-list, timings that disagree, ...). On an error
  the worker logs one message naming each error and exits with status 1, instead of
  starting and failing every step that needs the broken part, a traceback per retry.
  The dispatcher (``run_scheduler``) runs the same ``startup_checks``.
* ``setup_logging``: a receiver tells Celery to leave logging alone, so the worker
  logs through settings ``LOGGING`` like every other process: ``LOG_FORMAT``,
  ``LOG_LEVEL`` and the step context (schedules/logcontext.py) apply to Celery's
  own lines as well.

Connected by importing this module from scheduler_project/celery.py.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_init, setup_logging


@celeryd_init.connect
def check_before_start(sender: Any = None, **kwargs: Any) -> None:
    from schedules.checks import startup_checks

    startup_checks("worker")  # exits with status 1 on an error (SystemExit passes Celery)


@setup_logging.connect
def keep_django_logging(**kwargs: Any) -> None:
    """A connected receiver keeps Celery from installing its own handlers. Django
    configures logging from settings LOGGING when it is set up (the worker sets it up
    before this signal; anything else that sends it, here). The worker's ``--loglevel``
    is therefore not used: ``LOG_LEVEL`` sets the level of every process."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
