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
