"""The webhook notifier: POST the alert as JSON, signed with HMAC-SHA256.

SSRF guard: the http_check action's (``workers.actions.http_check.url_problem``): the
host must be in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS, checked when a job's webhook_url
is saved, by ``manage.py check`` for SCHEDULES_NOTIFY_WEBHOOK_URL, and again before
every attempt. Redirects are not followed, no proxy is taken from the environment,
a timeout always applies and at most a little of the answer is read.

Signature: with SCHEDULES_NOTIFY_WEBHOOK_SECRET set, every request carries
``X-Schedules-Timestamp: <unix seconds>`` and ``X-Schedules-Signature: sha256=<hex>``,
the HMAC-SHA256 under the secret of ``<timestamp>.`` followed by the raw body. A
receiver recomputes it, compares in constant time and refuses an old timestamp
(docs/alerts.md shows how), so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests
from django.conf import settings
from requests.exceptions import ChunkedEncodingError

from workers.actions.http_check import url_problem

from ..validation import Errors
from .outcome import Outcome

FIELD_MAX = 2000
#: Answer bytes read to explain a refusal.
EXCERPT_BYTES = 300
#: Statuses worth another attempt; any other 3xx or 4xx is final.
RETRY_STATUSES = frozenset({408, 425, 429})

SIGNATURE_HEADER = "X-Schedules-Signature"
TIMESTAMP_HEADER = "X-Schedules-Timestamp"
EVENT_HEADER = "X-Schedules-Event"
DELIVERY_HEADER = "X-Schedules-Delivery"


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` may not receive webhooks under the current settings, or None."""
    problem = url_problem(url)
    if problem:
        return f"{problem} (a webhook may call only the hosts http_check may)"
    return None


def check_webhook_url(errors: Errors, field: str, value: Any) -> str:
    """A job's webhook URL, stripped: empty (none) or a URL the SSRF guard allows."""
    if value is None:
        return ""
    if not isinstance(value, str):
        errors.add(field, "must be a URL, as text (or empty for none)")
        return ""
    url = str(value).strip()
    if not url:
        return ""
    if len(url) > FIELD_MAX:
        errors.add(field, f"is {len(url)} characters; the limit is {FIELD_MAX}")
        return url
    problem = webhook_url_problem(url)
    if problem:
        errors.add(field, problem)
    return url


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 under ``secret`` of ``<timestamp>.<body>``."""
    signed = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any], *, delivery_id: int, attempt: int) -> bytes:
    """The raw JSON body: the alert, with the delivery's id (the same on every attempt,
    so a receiver can drop a repeat) and the attempt number."""
    return json.dumps(
        {**payload, "delivery_id": delivery_id, "attempt": attempt},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def send(
    url: str, payload: dict[str, Any], *, event: str, delivery_id: int, attempt: int
) -> Outcome:
    """One POST of the alert to ``url``."""
    problem = webhook_url_problem(url)  # the settings may have changed since it was saved
    if problem:
        return Outcome.failed(problem)
    body = body_of(payload, delivery_id=delivery_id, attempt=attempt)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "schedules-notifier/1",
        EVENT_HEADER: event,
        DELIVERY_HEADER: str(delivery_id),
        TIMESTAMP_HEADER: timestamp,
    }
    secret: str = settings.SCHEDULES_NOTIFY_WEBHOOK_SECRET
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    timeout: float = settings.SCHEDULES_NOTIFY_WEBHOOK_TIMEOUT
    with requests.Session() as session:
        session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
        try:
            with session.post(
                url,
                data=body,
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return Outcome.sent(status)
                excerpt = next(response.iter_content(EXCERPT_BYTES), b"")
        except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as exc:
            return Outcome.retry_later(f"{url} unreachable: {exc}")
        except requests.RequestException as exc:
            return Outcome.failed(f"{url} cannot be called: {exc}")
    text = excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace").strip()
    error = f"{url} answered {status}" + (f": {text}" if text else "")
    if status >= 500 or status in RETRY_STATUSES:
        return Outcome.retry_later(error, status)
    if 300 <= status < 400:
        location = response.headers.get("Location")
        error += f" (redirect to {location} not followed)" if location else ""
    return Outcome.failed(error, status)
