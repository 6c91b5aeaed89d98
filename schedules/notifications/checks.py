"""System checks of the alert settings: a bad value fails ``manage.py check`` (and the
start of every process) with a message naming the setting, not the first alert."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

from ..models import NotificationEvent
from .mail import TARGETS
from .webhook import webhook_url_problem


@checks.register()
def check_notifications(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    known = NotificationEvent.values
    unknown = [e for e in settings.SCHEDULES_NOTIFY_EVENTS if e not in known]
    if unknown:
        messages.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_EVENTS names unknown event(s) {', '.join(map(repr, unknown))}; "
                f"the events are {', '.join(known)}.",
                id="schedules.E101",
            )
        )
    targets = settings.SCHEDULES_NOTIFY_MAIL
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        messages.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_MAIL has {', '.join(map(repr, bad))}; it takes admins, "
                "managers, both (admins,managers) or nothing.",
                id="schedules.E102",
            )
        )
    for target in targets:
        setting = TARGETS.get(target, ("", None))[0]
        if setting and not getattr(settings, setting):
            messages.append(
                checks.Warning(
                    f"SCHEDULES_NOTIFY_MAIL includes {target} but {setting} is empty, so "
                    "those alerts are recorded as failed.",
                    hint=f"Set {setting}, e.g. {setting}=ops@example.com.",
                    id="schedules.W103",
                )
            )
    url = settings.SCHEDULES_NOTIFY_WEBHOOK_URL
    problem = webhook_url_problem(url) if url else None
    if problem:
        messages.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_WEBHOOK_URL: {problem}.",
                hint="Add the webhook's host to SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS.",
                id="schedules.E104",
            )
        )
    if url and not settings.SCHEDULES_NOTIFY_WEBHOOK_SECRET:
        messages.append(
            checks.Warning(
                "SCHEDULES_NOTIFY_WEBHOOK_URL is set but SCHEDULES_NOTIFY_WEBHOOK_SECRET is "
                "not, so webhooks go out unsigned and their receiver cannot tell them from "
                "forgeries.",
                hint="Set SCHEDULES_NOTIFY_WEBHOOK_SECRET to 32+ random characters.",
                id="schedules.W105",
            )
        )
    messages += _numbers()
    base = settings.SCHEDULES_NOTIFY_BASE_URL
    if base and (urlsplit(base).scheme not in ("http", "https") or not urlsplit(base).netloc):
        messages.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_BASE_URL is {base!r}; it must be the site's http(s) "
                "address, e.g. https://scheduler.example.com, or empty.",
                id="schedules.E107",
            )
        )
    return messages


def _numbers() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if settings.SCHEDULES_NOTIFY_MAX_ATTEMPTS < 1:
        errors.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_MAX_ATTEMPTS is {settings.SCHEDULES_NOTIFY_MAX_ATTEMPTS}; "
                "it must be at least 1.",
                id="schedules.E106",
            )
        )
    for name in ("SCHEDULES_NOTIFY_RETRY_BASE", "SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT"):
        if getattr(settings, name) <= 0:
            errors.append(checks.Error(f"{name} must be more than 0 seconds.", id="schedules.E106"))
    if settings.SCHEDULES_NOTIFY_RETRY_MAX < settings.SCHEDULES_NOTIFY_RETRY_BASE:
        errors.append(
            checks.Error(
                f"SCHEDULES_NOTIFY_RETRY_MAX ({settings.SCHEDULES_NOTIFY_RETRY_MAX} s) must be "
                f"at least SCHEDULES_NOTIFY_RETRY_BASE ({settings.SCHEDULES_NOTIFY_RETRY_BASE} s).",
                id="schedules.E106",
            )
        )
    return errors
