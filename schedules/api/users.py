"""The user behind an API request."""

from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework.request import Request


def request_user(request: Request) -> User:
    """The authenticated user; every API view requires one (IsAuthenticated)."""
    user = request.user
    if not isinstance(user, User):
        raise TypeError("API views require an authenticated user")
    return user
