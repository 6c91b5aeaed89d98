"""Recording service backends, chosen by SCHEDULES_RECORDING_BACKEND like EMAIL_BACKEND.

* ``logging`` (embedded default): logs the call and returns what it would send.
* ``http``: POSTs JSON to ``SCHEDULES_RECORDING_URL``, whose host must be listed
  in ``SCHEDULES_RECORDING_ALLOWED_HOSTS``; timeouts always apply, redirects are
  never followed.
* a dotted path to a ``RecordingBackend`` subclass.
"""

from __future__ import annotations

import difflib
import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ..errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

BACKEND_ALIASES = {
    "logging": "workers.backends.recording.LoggingRecordingBackend",
    "http": "workers.backends.recording.HttpRecordingBackend",
}


class RecordingBackend:
    """Three calls: start, stop and ping a class's recording."""

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("start", body)

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("stop", body)

    def ping(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("ping", body)


class LoggingRecordingBackend(RecordingBackend):
    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        logger.info("recording %s %s", operation, body)
        return {"backend": "logging", "operation": operation}


def check_allowed_url(url: str, allowed_hosts: list[str]) -> str:
    """Refuse a URL whose scheme is not http(s) or whose host is not allow-listed."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise ImproperlyConfigured(f"SCHEDULES_RECORDING_URL must be http(s), not {url!r}.")
    if not parts.hostname or parts.hostname.lower() not in {h.lower() for h in allowed_hosts}:
        raise ImproperlyConfigured(
            f"SCHEDULES_RECORDING_URL host {parts.hostname!r} is not in "
            f"SCHEDULES_RECORDING_ALLOWED_HOSTS ({allowed_hosts})."
        )
    return url.rstrip("/")


class HttpRecordingBackend(RecordingBackend):
    """POST {base}/recordings/{operation} with a JSON body and an Idempotency-Key header."""

    def __init__(self) -> None:
        self.base_url = check_allowed_url(
            settings.SCHEDULES_RECORDING_URL, settings.SCHEDULES_RECORDING_ALLOWED_HOSTS
        )
        self.timeout = (
            settings.SCHEDULES_RECORDING_CONNECT_TIMEOUT,
            settings.SCHEDULES_RECORDING_READ_TIMEOUT,
        )
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment
        if settings.SCHEDULES_RECORDING_TOKEN:
            self.session.headers["Authorization"] = f"Bearer {settings.SCHEDULES_RECORDING_TOKEN}"

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/recordings/{operation}"
        headers = {"Idempotency-Key": str(body.get("idempotency_key", ""))}
        try:
            response = self.session.post(
                url, json=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"recording service unreachable: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"recording service answered {response.status_code}")
        if response.status_code >= 300:
            raise PermanentError(
                f"recording service answered {response.status_code}: {response.text[:200]}"
            )
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"text": response.text[:200]}
        return {"status": response.status_code, "response": data}


@functools.cache
def get_recording_backend() -> RecordingBackend:
    name: str = settings.SCHEDULES_RECORDING_BACKEND
    path = BACKEND_ALIASES.get(name, name)
    if "." not in path:
        nearest = difflib.get_close_matches(name, BACKEND_ALIASES, n=1)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise ImproperlyConfigured(
            f"Unknown SCHEDULES_RECORDING_BACKEND {name!r}: use one of "
            f"{sorted(BACKEND_ALIASES)} or a dotted path.{hint}"
        )
    cls = import_string(path)
    backend: RecordingBackend = cls()
    return backend
