"""The mail notifier: ``mail_admins`` or ``mail_managers`` through Django's EMAIL_BACKEND.

The sender is SERVER_EMAIL and the subject starts with EMAIL_SUBJECT_PREFIX, as for
Django's own error mails.
"""

from __future__ import annotations

import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import BadHeaderError, mail_admins, mail_managers

from .outcome import Outcome

TARGETS = {"admins": ("ADMINS", mail_admins), "managers": ("MANAGERS", mail_managers)}
SUBJECT_CHARS = 150


def subject_of(payload: dict[str, Any]) -> str:
    """The summary on one line (a header may not hold a line break)."""
    text = " ".join(str(payload.get("summary") or payload.get("event", "alert")).split())
    return text if len(text) <= SUBJECT_CHARS else text[: SUBJECT_CHARS - 1] + "…"


def _lines(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in _lines(f"{prefix}{key}.", item)]
    if value in (None, ""):
        return []
    return [f"{prefix[:-1]}: {value}"]


def message_of(payload: dict[str, Any]) -> str:
    """The summary, where to look in the admin, then every fact as ``name: value``."""
    head = [str(payload.get("summary", ""))]
    if payload.get("admin_url"):
        head.append(f"Admin: {payload['admin_url']}")
    facts = [
        line
        for key, value in payload.items()
        if key not in ("summary", "admin_url")
        for line in _lines(f"{key}.", value)
    ]
    return "\n".join([*head, "", *facts, ""])


def send(target: str, payload: dict[str, Any]) -> Outcome:
    """Mail the alert to the ADMINS (``admins``) or the MANAGERS (``managers``)."""
    if target not in TARGETS:
        return Outcome.failed(f"unknown mail target {target!r}: use admins or managers")
    setting, mail = TARGETS[target]
    if not getattr(settings, setting):
        return Outcome.failed(
            f"{setting} is empty, so there is nobody to mail: set {setting} (e.g. "
            f"{setting}=ops@example.com) or take {target} out of SCHEDULES_NOTIFY_MAIL"
        )
    try:
        mail(subject_of(payload), message_of(payload), fail_silently=False)
    except (BadHeaderError, ValueError) as exc:
        return Outcome.failed(f"the mail was refused: {exc}")
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome.retry_later(f"{type(exc).__name__}: {exc}")
    return Outcome.sent()
