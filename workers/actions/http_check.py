"""http_check: GET an allow-listed URL and report done when a JSON field equals a value.

A polling action: while the field does not match it returns ``NotDone`` and the
job checks again after its poll interval. SSRF guards: the host must be in
``SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS`` (checked when the job is saved and again
before each request), redirects are not followed, no proxy is taken from the
environment, and timeouts and a body size limit always apply.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from requests.exceptions import ChunkedEncodingError

from .base import ActionContext, NotDone, PermanentError, TransientError, register

logger = logging.getLogger(__name__)

JsonScalar = str | bool | int | float | None

MAX_HEADERS = 20
MAX_FAIL_ON = 20
CHUNK_BYTES = 64 * 1024
EXCERPT_CHARS = 200
#: RFC 9110 token characters.
HEADER_NAME_RE = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be fetched under the current settings, or None if it may."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme not in {"http", "https"}:
        return f"the url must be http or https, not {parts.scheme or 'schemeless'}"
    if "@" in parts.netloc or "\\" in url or any(c.isspace() for c in url):
        return "the url must not contain credentials, backslashes or spaces"
    host = parts.hostname
    if not host:
        return "the url has no host"
    allowed: list[str] = settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS
    if not allowed:
        return (
            f"host {host!r} is not allowed: SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS is empty, "
            "so no URL may be called"
        )
    if host not in {h.strip().strip("[]").lower() for h in allowed}:
        return f"host {host!r} is not in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS"
    return None


class HttpTarget(BaseModel):
    """A URL whose host is listed in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS, and headers to send
    (the SSRF guard shared by http_check and http_request)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    url: str = Field(max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_HEADERS)

    @field_validator("url")
    @classmethod
    def _allowed_url(cls, value: str) -> str:
        value = value.strip()
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(c in "\r\n" for c in name + text):
                raise ValueError(f"header {name!r} must not contain CR or LF")
            if not HEADER_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() == "host":
                raise ValueError("the Host header cannot be set; it comes from the url")
            if not all(c == "\t" or " " <= c <= "~" for c in text):
                raise ValueError(f"header {name!r} must be printable ASCII")
        return value


class HttpCheckPayload(HttpTarget):
    """GET url (host listed in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS) until the JSON value at
    field (dotted: job.state, items.0.state) is equals; a value in fail_on fails the job."""

    field: str = Field(min_length=1, max_length=200)
    equals: JsonScalar
    fail_on: list[JsonScalar] = Field(default_factory=list, max_length=MAX_FAIL_ON)

    @field_validator("field")
    @classmethod
    def _dotted_path(cls, value: str) -> str:
        value = value.strip()
        if not all(value.split(".")):
            raise ValueError("use dot-separated keys such as job.state, with no empty part")
        return value

    @model_validator(mode="after")
    def _distinct_outcomes(self) -> HttpCheckPayload:
        if any(same_value(self.equals, bad) for bad in self.fail_on):
            raise ValueError("equals must not also be listed in fail_on")
        return self


def same_value(seen: Any, expected: JsonScalar) -> bool:
    """JSON equality: true is not 1, "1" is not 1, 1 is 1.0."""
    if isinstance(seen, bool) or isinstance(expected, bool):
        return seen is expected
    if isinstance(seen, dict | list):
        return False
    return bool(seen == expected)


def read_field(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) at the dotted ``path``; digit parts index lists."""
    current = document
    for key in path.split("."):
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isascii() and key.isdigit():
            index = int(key)
            if index >= len(current):
                return False, None
            current = current[index]
        else:
            return False, None
    return True, current


def _read_at_most(response: requests.Response, limit: int) -> bytes:
    """The (decoded) body, read until it ends or is longer than ``limit`` bytes."""
    body = bytearray()
    for chunk in response.iter_content(chunk_size=min(CHUNK_BYTES, limit + 1)):
        body += chunk
        if len(body) > limit:
            break
    return bytes(body)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _excerpt(data: bytes) -> str:
    return data[:EXCERPT_CHARS].decode("utf-8", errors="replace")


def _recordable(value: Any) -> Any:
    """The value as the run keeps it: a big object or list becomes a short excerpt."""
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"))
        if len(text) > EXCERPT_CHARS:
            return text[:EXCERPT_CHARS] + "…"
    return value


def _fetch(
    url: str, headers: dict[str, str], *, method: str = "GET", json_body: Any = None
) -> tuple[int, bytes]:
    """The status and body of a request (a GET unless said), or the error the worker
    should act on."""
    timeout = (
        settings.SCHEDULES_HTTP_CHECK_CONNECT_TIMEOUT,
        settings.SCHEDULES_HTTP_CHECK_READ_TIMEOUT,
    )
    limit: int = settings.SCHEDULES_HTTP_CHECK_MAX_BYTES
    with requests.Session() as session:
        session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
        session.headers["Accept"] = "application/json"
        try:
            with session.request(
                method,
                url,
                headers=headers,
                json=json_body,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise TransientError(f"{url} answered {status}")
                if status >= 300:
                    excerpt = _excerpt(_read_at_most(response, EXCERPT_CHARS))
                    location = response.headers.get("Location")
                    moved = f" (redirect to {location} not followed)" if location else ""
                    raise PermanentError(f"{url} answered {status}{moved}: {excerpt}")
                body = _read_at_most(response, limit)
        except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as exc:
            raise TransientError(f"{url} unreachable: {exc}") from exc
        except requests.RequestException as exc:
            raise PermanentError(f"{url} cannot be fetched: {exc}") from exc
    if len(body) > limit:
        raise PermanentError(
            f"{url} answered more than {limit} bytes (SCHEDULES_HTTP_CHECK_MAX_BYTES)"
        )
    return status, body


@register(
    "http_check",
    payload=HttpCheckPayload,
    description="GET a JSON status URL; done when a field equals a value.",
    has_side_effects=False,
    polls=True,
)
def http_check(ctx: ActionContext, payload: HttpCheckPayload) -> dict[str, Any] | NotDone:
    problem = url_problem(payload.url)  # the settings may have changed since the job was saved
    if problem:
        raise PermanentError(problem)
    status, body = _fetch(payload.url, payload.headers)
    try:
        document = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise PermanentError(
            f"{payload.url} answered {status} without JSON: {_excerpt(body)}"
        ) from None
    found, value = read_field(document, payload.field)
    done = found and same_value(value, payload.equals)
    logger.info(
        "step %s v%s: http_check %s %s=%r done=%s",
        ctx.step_id,
        ctx.version,
        urlsplit(payload.url).hostname,
        payload.field,
        _recordable(value) if found else "<missing>",
        done,
    )
    if found and any(same_value(value, bad) for bad in payload.fail_on):
        raise PermanentError(f"{payload.field} reported {json.dumps(value)}")
    result: dict[str, Any] = {
        "status_code": status,
        "field": payload.field,
        "value": _recordable(value),
        "done": done,
    }
    if not found:
        result["missing"] = True
    return result if done else NotDone(result=result)
