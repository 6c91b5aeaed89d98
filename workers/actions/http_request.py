"""http_request: call an allow-listed JSON API once and keep its answer as the result.

The step of a workflow that starts, stops or asks something of another service (seed
002's CheckVersions, StartMigration, MigrationStatus). The answer's JSON is the run's
result, so a workflow's later states read it by path (``$.CheckVersions.json.in_sync``).
The SSRF guards are http_check's: the host must be in
``SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS`` (checked when saved and before each request),
redirects are not followed, no proxy is taken from the environment, timeouts and the
body size limit always apply. Every request carries ``Idempotency-Key:
step-<id>-v<version>``, the same for every attempt of one step version, so a service
can drop a repeated call (a retry, or an attempt taken over after a worker was lost).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from .base import ActionContext, PermanentError, register
from .http_check import EXCERPT_CHARS, HttpTarget, _excerpt, _fetch, _no_constants, url_problem

logger = logging.getLogger(__name__)

#: The longest text answer kept in the result (a JSON answer is kept whole).
TEXT_CHARS = 1000


class HttpRequestPayload(HttpTarget):
    """METHOD url (host listed in SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS) with an optional
    JSON body; the answer's JSON is the result."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    body: Any = Field(default=None, description="JSON sent as the request body.")

    @model_validator(mode="after")
    def _no_body_on_get(self) -> HttpRequestPayload:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET sends no body: use POST, PUT or PATCH")
        return self


@register(
    "http_request",
    payload=HttpRequestPayload,
    description="Call a JSON API (GET, POST, PUT, PATCH, DELETE); its answer is the result.",
)
def http_request(ctx: ActionContext, payload: HttpRequestPayload) -> dict[str, Any]:
    problem = url_problem(payload.url)  # the settings may have changed since it was saved
    if problem:
        raise PermanentError(problem)
    headers = {"Idempotency-Key": ctx.idempotency_key, **payload.headers}
    status, body = _fetch(payload.url, headers, method=payload.method, json_body=payload.body)
    result: dict[str, Any] = {"status_code": status}
    if body:
        try:
            result["json"] = json.loads(body, parse_constant=_no_constants)
        except (ValueError, RecursionError):
            result["text"] = body[:TEXT_CHARS].decode("utf-8", errors="replace")
    logger.info(
        "step %s v%s: http_request %s %s answered %s%s",
        ctx.step_id,
        ctx.version,
        payload.method,
        urlsplit(payload.url).hostname,
        status,
        "" if "json" in result or not body else f" (not JSON: {_excerpt(body[:EXCERPT_CHARS])})",
    )
    return result
