"""System checks: a bad engine or backend name fails at start-up, not at the first job."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register()
def check_engines(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .engines import get_engine

    errors: list[checks.CheckMessage] = []
    for precision, name in settings.SCHEDULES_ENGINES.items():
        try:
            get_engine(name)
        except ImproperlyConfigured as exc:
            errors.append(
                checks.Error(
                    str(exc), hint=f"Fix SCHEDULES_ENGINES[{precision!r}].", id="schedules.E001"
                )
            )
    return errors


@checks.register()
def check_recording_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from workers.backends.recording import get_recording_backend

    try:
        get_recording_backend()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="schedules.E002")]
    return []


@checks.register()
def check_timing(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Settings whose values must agree with each other."""
    errors: list[checks.CheckMessage] = []
    lookahead = settings.SCHEDULES_DISPATCH_LOOKAHEAD
    hold = settings.SCHEDULES_EARLY_HOLD_MAX
    if not 0 <= lookahead < hold:
        errors.append(
            checks.Error(
                f"SCHEDULES_DISPATCH_LOOKAHEAD is {lookahead} s; it must be at least 0 and "
                f"less than SCHEDULES_EARLY_HOLD_MAX ({hold} s), or the worker would re-arm "
                "every step the dispatcher releases early.",
                id="schedules.E003",
            )
        )
    for name in ("SCHEDULES_DISPATCH_CHUNK", "SCHEDULES_DISPATCH_SPREAD"):
        if getattr(settings, name) < 1:
            errors.append(checks.Error(f"{name} must be at least 1.", id="schedules.E004"))
    visibility = settings.SCHEDULES_SQS_VISIBILITY_TIMEOUT
    if settings.CELERY_BROKER_URL.startswith("sqs://") and visibility <= (
        settings.CELERY_TASK_TIME_LIMIT
    ):
        errors.append(
            checks.Error(
                f"SCHEDULES_SQS_VISIBILITY_TIMEOUT ({visibility} s) must be longer than the "
                f"task time limit (CELERY_TASK_TIME_LIMIT, "
                f"{settings.CELERY_TASK_TIME_LIMIT:.0f} s), or SQS redelivers messages still "
                "being worked on.",
                id="schedules.E005",
            )
        )
    for name in ("SCHEDULES_LEASE_SECONDS", "SCHEDULES_DISPATCH_LEASE_SECONDS"):
        if getattr(settings, name) < 1:
            errors.append(
                checks.Error(
                    f"{name} must be at least 1 second (a lease is renewed every quarter of it).",
                    id="schedules.E006",
                )
            )
    if settings.SCHEDULES_RECOVER_INTERVAL <= 0:
        errors.append(
            checks.Error("SCHEDULES_RECOVER_INTERVAL must be positive.", id="schedules.E007")
        )
    return errors
