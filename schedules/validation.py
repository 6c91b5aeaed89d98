"""The rules for input, in one place, used by the services (and so by every entry point).

Each check adds a message to an ``Errors`` collector under the field it is
about; ``Errors.raise_if_any`` raises one Django ``ValidationError`` with a
message per field, so a form, the API or a command can show them all at once.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zoneinfo
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from pydantic import ValidationError as PydanticValidationError

from workers.actions import REGISTRY, Scope, UnknownAction, get_action, job_action_names

from .models import LEGACY_PRECISIONS, Precision


class Errors:
    def __init__(self) -> None:
        self.by_field: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.by_field.setdefault(field, []).append(message)

    def __contains__(self, field: str) -> bool:
        return field in self.by_field

    def raise_if_any(self) -> None:
        if self.by_field:
            raise ValidationError(
                {
                    field: [ValidationError(m, code="invalid") for m in messages]
                    for field, messages in self.by_field.items()
                }
            )


def seconds_text(seconds: float) -> str:
    """A duration for messages: '90 s', or '7 days' when it is whole days."""
    if seconds % 86400 == 0 and seconds >= 86400:
        return f"{int(seconds // 86400)} days"
    return f"{int(seconds)} s"


def check_aware(errors: Errors, field: str, value: Any) -> dt.datetime | None:
    """A datetime with a time zone, or an error naming the field."""
    if not isinstance(value, dt.datetime):
        errors.add(field, "must be a date and time")
        return None
    if timezone.is_naive(value):
        errors.add(
            field,
            "must include a time zone (a naive date and time is ambiguous); "
            "use e.g. 2026-12-01T09:00:00+01:00 or ...Z for UTC",
        )
        return None
    return value.astimezone(dt.UTC)


def check_due(errors: Errors, field: str, value: Any, *, now: dt.datetime) -> dt.datetime | None:
    """An aware due time no further in the past than the grace and not beyond the maximum."""
    due = check_aware(errors, field, value)
    if due is None:
        return None
    grace = settings.SCHEDULES_PAST_GRACE
    if due < now - dt.timedelta(seconds=grace):
        errors.add(
            field,
            f"is in the past by more than the {seconds_text(grace)} grace "
            f"(SCHEDULES_PAST_GRACE); it is now {now.isoformat(timespec='seconds')}",
        )
    ahead = settings.SCHEDULES_MAX_AHEAD
    if due > now + dt.timedelta(seconds=ahead):
        errors.add(field, f"is more than {seconds_text(ahead)} ahead (SCHEDULES_MAX_AHEAD)")
    return due


def check_time_zone(errors: Errors, field: str, value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors.add(
            field, f"{value!r} is not a known time zone (use an IANA name like Europe/Paris)"
        )
    return value


@functools.cache
def values_of(choices: type[models.Choices]) -> tuple[str, ...]:
    """A choices enum's values, computed once (Django computes them on every access)."""
    return tuple(choices.values)


def check_choice(
    errors: Errors, field: str, value: Any, choices: type[models.Choices] | Sequence[str]
) -> Any:
    allowed = values_of(choices) if isinstance(choices, type) else choices
    if value not in allowed:
        errors.add(field, f"must be one of {', '.join(allowed)}, not {value!r}")
    return value


def check_precision(errors: Errors, field: str, value: str) -> str:
    if value in LEGACY_PRECISIONS:
        errors.add(field, f"{value!r} is now called {LEGACY_PRECISIONS[value].value!r}")
        return value
    return str(check_choice(errors, field, value, Precision))


def check_max_attempts(errors: Errors, field: str, value: Any) -> Any:
    limit: int = settings.SCHEDULES_MAX_ATTEMPTS_LIMIT
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        errors.add(
            field, f"must be a whole number from 1 to {limit} (SCHEDULES_MAX_ATTEMPTS_LIMIT)"
        )
    return value


def _format_pydantic(exc: PydanticValidationError) -> list[str]:
    messages = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        text = error["msg"].removeprefix("Value error, ")
        messages.append(f"{where}: {text}" if where else text)
    return messages


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def check_job_action(errors: Errors, field: str, action: str, *, who: str = "a job") -> None:
    """Only actions registered for jobs (``Scope.JOB``): not a classroom's recording actions,
    nor the workflow engine's own. An unknown action is left to ``check_action_payload``."""
    spec = REGISTRY.get(action) if isinstance(action, str) else None
    if spec is None or spec.for_jobs:
        return
    if spec.scope == Scope.CLASSROOM:
        rule = (
            f"{action} is a classroom action: it runs only on a classroom's timeline, which "
            "builds its payload from the classroom (create a classroom instead)"
        )
    else:
        rule = f"{action} is run by the workflow engine itself, for its own states"
    errors.add(
        field,
        f"{rule}; {who} cannot run it. Actions {who} may run: {', '.join(job_action_names())}",
    )


def check_action_payload(
    errors: Errors,
    action: str,
    payload: Any,
    *,
    action_field: str = "action",
    payload_field: str = "payload",
) -> dict[str, Any]:
    """The payload validated by the action's schema, normalized to plain JSON."""
    try:
        spec = get_action(action)
    except UnknownAction as exc:
        errors.add(action_field, str(exc))
        return payload if isinstance(payload, dict) else {}
    if not isinstance(payload, dict):
        errors.add(payload_field, "must be a JSON object")
        return {}
    if _has_nul(payload):
        # PostgreSQL cannot store it (in text or jsonb); refused on every database alike.
        errors.add(payload_field, "must not contain the NUL character (\\u0000)")
        return payload
    size = len(json.dumps(payload, separators=(",", ":"), default=str).encode())
    limit = settings.SCHEDULES_MAX_PAYLOAD_BYTES
    if size > limit:
        errors.add(
            payload_field,
            f"is {size} bytes; the limit is {limit} bytes (SCHEDULES_MAX_PAYLOAD_BYTES)",
        )
        return payload
    try:
        model = spec.payload_model.model_validate(payload)
    except PydanticValidationError as exc:
        for message in _format_pydantic(exc):
            errors.add(payload_field, message)
        return payload
    normalized: dict[str, Any] = model.model_dump(mode="json", exclude_defaults=True)
    return normalized
