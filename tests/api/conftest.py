from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice(db: Any) -> User:
    return User.objects.create_user("alice", password="pw-alice-1234")


@pytest.fixture
def bob(db: Any) -> User:
    return User.objects.create_user("bob", password="pw-bob-1234")


@pytest.fixture
def api(alice: User) -> APIClient:
    return client_for(alice)


@pytest.fixture
def bob_api(bob: User) -> APIClient:
    return client_for(bob)


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> None:
    """Throttle counters live in the cache; each test starts with none spent."""
    cache.clear()
