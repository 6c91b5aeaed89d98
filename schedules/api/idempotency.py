"""Idempotency-Key on creates: a retry with the same key and body gets the first answer.

The record is written in the same transaction as what the create wrote, so a
key never points at half a result; a concurrent duplicate loses on the unique
constraint and replays the winner's answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from ..models import IdempotencyRecord
from ..services.transactions import run_retrying
from .users import request_user

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _hash(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _replay(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        return Response(
            {
                "Idempotency-Key": [
                    "this key was already used with a different request body; use a new key "
                    "for a new request"
                ]
            },
            status=status.HTTP_409_CONFLICT,
        )
    response = Response(record.response_body, status=record.response_status)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(request: Request, create: Callable[[], Response]) -> Response:
    """Run ``create`` once per (user, key, endpoint) within SCHEDULES_IDEMPOTENCY_TTL."""
    key = request.headers.get(HEADER)
    if key is None:
        return create()
    if not key or len(key) > MAX_KEY_LENGTH:
        return Response(
            {HEADER: [f"must be 1 to {MAX_KEY_LENGTH} characters"]},
            status=status.HTTP_400_BAD_REQUEST,
        )
    endpoint = f"{request.method} {request.path}"
    request_hash = _hash(request)
    now = timezone.now()
    scope = IdempotencyRecord.objects.filter(user=request_user(request), key=key, endpoint=endpoint)
    scope.filter(expires_at__lte=now).delete()
    existing = scope.first()
    if existing is not None:
        return _replay(existing, request_hash)

    def create_and_remember() -> Response:
        response = create()
        if 200 <= response.status_code < 300:
            IdempotencyRecord.objects.create(
                user=request_user(request),
                key=key,
                endpoint=endpoint,
                request_hash=request_hash,
                response_status=response.status_code,
                response_body=json.loads(json.dumps(response.data, default=str)),
                expires_at=now + dt.timedelta(seconds=settings.SCHEDULES_IDEMPOTENCY_TTL),
            )
        return response

    try:
        # Both or neither, run again whole if the database reports a conflict.
        response = run_retrying(create_and_remember, what=f"{endpoint} with {HEADER}")
    except IntegrityError:
        # A concurrent request with the same key committed first: ours rolled back.
        winner = scope.first()
        if winner is None:
            raise  # not a key race: let the error surface
        return _replay(winner, request_hash)
    return response


def header_parameter() -> Any:
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(
        HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        required=False,
        description=(
            "Makes a retry safe: the same key and body returns the first result (header "
            "Idempotent-Replayed: true); the same key with a different body is a 409. Keys "
            "are kept for SCHEDULES_IDEMPOTENCY_TTL seconds (default 24 hours)."
        ),
    )
