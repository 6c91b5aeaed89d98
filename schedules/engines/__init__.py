"""Engines, chosen per step from ``SCHEDULES_ENGINES`` by the job's precision.

Engines are named by a short alias or a dotted path to an ``Engine`` subclass,
and imported lazily, like Django's EMAIL_BACKEND.
"""

from __future__ import annotations

import difflib
import functools
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import Engine, ReconcilePlan, Timer, TimerNameSpent, TimerStatus

__all__ = [
    "AUTO",
    "ENGINE_ALIASES",
    "Engine",
    "ReconcilePlan",
    "Timer",
    "TimerNameSpent",
    "TimerStatus",
    "auto_engine_name",
    "configured_engine_names",
    "engine_class",
    "engine_name_for_precision",
    "get_engine",
    "meets",
    "price_per_timer",
]

ENGINE_ALIASES: dict[str, str] = {
    "local": "schedules.engines.local.LocalEngine",
    "stepfunctions": "schedules.engines.stepfunctions.StepFunctionsEngine",
    "dynamodb_ttl": "schedules.engines.dynamodb_ttl.DynamoDBTTLEngine",
    "eventbridge": "schedules.engines.eventbridge.EventBridgeEngine",
}
#: The AWS engines ``auto`` chooses from, finest first.
AWS_ENGINES = ("stepfunctions", "eventbridge", "dynamodb_ttl")


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
    engine = engine_class(name)()
    engine.name = name
    return engine


#: The value of SCHEDULES_ENGINES[<class>] that picks the cheapest configured engine.
AUTO = "auto"


def engine_class(name: str) -> type[Engine]:
    """The Engine subclass for a name (alias or dotted path), without building it."""
    path = _resolve(name)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Cannot import schedules engine {path!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise ImproperlyConfigured(f"{path!r} is not a schedules Engine subclass.")
    return cls


def meets(cls: type[Engine], precision: str) -> bool:
    """The engine releases steps at least as precisely as the class asks."""
    from ..models import LEGACY_PRECISIONS, PRECISION_ORDER

    wanted = LEGACY_PRECISIONS.get(precision, precision)
    return PRECISION_ORDER.index(cls.precision) <= PRECISION_ORDER.index(wanted)


def price_per_timer(name: str) -> Decimal:
    """The engine's list price to arm and release one step, in USD.

    SCHEDULES_ENGINE_PRICES overrides the documented list price, per engine name.
    """
    overrides: dict[str, Any] = settings.SCHEDULES_ENGINE_PRICES
    if name in overrides:
        return Decimal(str(overrides[name]))
    return engine_class(name).list_price


def auto_engine_name(precision: str) -> str:
    """The cheapest configured AWS engine that meets the class; local when none does.

    An AWS engine is configured when the settings it needs are set (``is_configured``).
    Between equal prices the finer engine wins.
    """
    candidates = [
        name
        for name in AWS_ENGINES
        if engine_class(name).is_configured() and meets(engine_class(name), precision)
    ]
    if not candidates:
        return "local"
    return min(candidates, key=lambda name: (price_per_timer(name), AWS_ENGINES.index(name)))


def engine_name_for_precision(precision: str) -> str:
    """The engine configured for a precision class (seconds, minute or relaxed)."""
    from ..models import LEGACY_PRECISIONS

    engines: dict[str, str] = settings.SCHEDULES_ENGINES
    precision = LEGACY_PRECISIONS.get(precision, precision)
    try:
        name = engines[precision]
    except KeyError:
        raise ImproperlyConfigured(
            f"SCHEDULES_ENGINES has no engine for precision {precision!r}."
        ) from None
    return auto_engine_name(precision) if name == AUTO else name


def configured_engine_names() -> list[str]:
    """The engines SCHEDULES_ENGINES chooses now (``auto`` resolved), sorted."""
    engines: dict[str, str] = settings.SCHEDULES_ENGINES
    return sorted({engine_name_for_precision(precision) for precision in engines})
