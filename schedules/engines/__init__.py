"""Engines, chosen per step from ``SCHEDULES_ENGINES`` by the job's precision.

Engines are named by a short alias or a dotted path to an ``Engine`` subclass,
and imported lazily, like Django's EMAIL_BACKEND.
"""

from __future__ import annotations

import difflib
import functools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import Engine, ReconcilePlan, Timer, TimerNameSpent, TimerStatus

__all__ = [
    "ENGINE_ALIASES",
    "Engine",
    "ReconcilePlan",
    "Timer",
    "TimerNameSpent",
    "TimerStatus",
    "engine_name_for_precision",
    "get_engine",
]

ENGINE_ALIASES: dict[str, str] = {
    "local": "schedules.engines.local.LocalEngine",
    "stepfunctions": "schedules.engines.stepfunctions.StepFunctionsEngine",
    "dynamodb_ttl": "schedules.engines.dynamodb_ttl.DynamoDBTTLEngine",
}


def _resolve(name: str) -> str:
    if name in ENGINE_ALIASES:
        return ENGINE_ALIASES[name]
    if "." in name:
        return name
    nearest = difflib.get_close_matches(name, ENGINE_ALIASES, n=1)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    raise ImproperlyConfigured(
        f"Unknown schedules engine {name!r}: use one of {sorted(ENGINE_ALIASES)} "
        f"or a dotted path to an Engine subclass.{hint}"
    )


@functools.cache
def get_engine(name: str) -> Engine:
    """The engine instance for a name (alias or dotted path), built once per process."""
    path = _resolve(name)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Cannot import schedules engine {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ImproperlyConfigured(f"{path!r} is not a schedules Engine subclass.")
    engine = cls()
    engine.name = name
    return engine


def engine_name_for_precision(precision: str) -> str:
    """The engine configured for a precision class (``precise`` or ``relaxed``)."""
    engines: dict[str, str] = settings.SCHEDULES_ENGINES
    try:
        return engines[precision]
    except KeyError:
        raise ImproperlyConfigured(
            f"SCHEDULES_ENGINES has no engine for precision {precision!r}."
        ) from None
