"""The API's error shape: a 400 names the field and the rule, like the admin's form errors."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import OperationalError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..services.transactions import Busy, conflict_reason

#: Seconds a client is told to wait before it tries again after a 503.
RETRY_AFTER = 1


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Turn the services' ValidationError ({field: [messages]}) into a DRF 400, and a
    database that kept reporting a conflict (nothing was written) into a 503 to retry."""
    if isinstance(exc, OperationalError) and conflict_reason(exc):
        exc = Busy(1, conflict_reason(exc))  # a conflict outside any retrying transaction
    if isinstance(exc, Busy):
        return Response(
            {"detail": str(exc), "code": "busy"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER)},
        )
    if isinstance(exc, DjangoValidationError):
        detail: Any = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = ValidationError(detail=detail)
    return drf_exception_handler(exc, context)
