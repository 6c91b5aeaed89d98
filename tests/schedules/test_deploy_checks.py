"""check --deploy warns about parts that do not belong in production (schedules.W001-W004)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from schedules.checks import check_deploy_allow_lists, unsafe_host

ROOT = Path(__file__).resolve().parents[2]
IDS = ("schedules.W001", "schedules.W002", "schedules.W003", "schedules.W004")

#: A production deployment with its parts right (nothing here is connected to).
RIGHT = {
    "DATABASE_URL": "postgres://schedules@db.example.com:5432/schedules",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
    "CACHE_URL": "rediscache://redis.example.com:6379/1",
    "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS": "status.example.com",
    "SCHEDULES_RECORDING_ALLOWED_HOSTS": "rec.example.com",
}
#: The embedded defaults, and a metadata address on each allow-list.
WRONG = {
    "DATABASE_URL": "",  # the SQLite default
    "CELERY_BROKER_URL": "filesystem://",
    "CACHE_URL": "locmemcache://",
    "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS": "status.example.com,169.254.169.254",
    "SCHEDULES_RECORDING_ALLOWED_HOSTS": "metadata.google.internal",
}


def check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "SECRET", "ALLOWED", "DATABASE", "DEBUG", "CACHE"))
        and not k.startswith(("CELERY", "SCHEDULES", "LOG_"))
    }
    base.update(
        {
            "SCHEDULES_DATA_DIR": str(tmp_path),
            "DJANGO_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": "scheduler.example.com",
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={**base, **{k: v for k, v in env.items() if v}},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_warning_appears_in_check_deploy_with_the_embedded_parts(tmp_path):
    result = check_deploy(tmp_path, **WRONG)

    assert result.returncode == 0, result.stderr  # warnings, not errors
    out = result.stderr
    assert "?: (schedules.W001) DATABASES['default'] is SQLite with DEBUG off" in out
    assert "HINT: Set DATABASE_URL to a PostgreSQL database" in out
    assert "?: (schedules.W002) CELERY_BROKER_URL is filesystem:// with DEBUG off" in out
    assert "HINT: Set CELERY_BROKER_URL to Redis" in out
    assert "?: (schedules.W003) CACHES['default'] is LocMemCache with DEBUG off" in out
    assert "HINT: Set CACHE_URL to a cache the processes share" in out
    assert (
        "?: (schedules.W004) SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS holds '169.254.169.254', "
        "a cloud metadata address (169.254.169.254)"
    ) in out
    assert (
        "?: (schedules.W004) SCHEDULES_RECORDING_ALLOWED_HOSTS holds "
        "'metadata.google.internal', a cloud metadata service name"
    ) in out
    assert "System check identified 5 issues (0 silenced)." in result.stdout + out


def test_no_warning_when_the_parts_are_right(tmp_path):
    result = check_deploy(tmp_path, **RIGHT)

    assert result.returncode == 0, result.stderr
    assert not any(i in result.stderr for i in IDS), result.stderr
    assert "System check identified no issues" in result.stdout


def test_with_debug_on_only_the_allow_list_warns(tmp_path):
    """SQLite, the folder broker and a per-process cache are the development setup; a
    metadata address on an allow-list is a mistake in any setup."""
    result = check_deploy(tmp_path, **WRONG, DJANGO_ENV="development", DEBUG="true")

    assert "schedules.W004" in result.stderr
    assert not any(i in result.stderr for i in IDS[:3]), result.stderr


def test_the_other_embedded_parts_warn_too(tmp_path):
    result = check_deploy(tmp_path, **{**RIGHT, "CELERY_BROKER_URL": "memory://"})
    assert "CELERY_BROKER_URL is memory:// with DEBUG off" in result.stderr
    result = check_deploy(tmp_path, **{**RIGHT, "CACHE_URL": "dummycache://"})
    assert "CACHES['default'] is DummyCache with DEBUG off" in result.stderr


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("169.254.169.254", "a cloud metadata address (169.254.169.254)"),
        ("2852039166", "a cloud metadata address (169.254.169.254)"),  # as a resolver reads it
        ("0xa9fea9fe", "a cloud metadata address (169.254.169.254)"),
        ("::ffff:169.254.169.254", "a cloud metadata address (169.254.169.254)"),
        ("[fd00:ec2::254]", "a cloud metadata address (fd00:ec2::254)"),
        ("169.254.170.2", "a cloud metadata address (169.254.170.2)"),
        ("100.100.100.200", "a cloud metadata address (100.100.100.200)"),
        ("169.254.10.20", "a link-local address (169.254.10.20)"),
        ("fe80::1", "a link-local address (fe80::1)"),
        ("Metadata.Google.Internal.", "a cloud metadata service name"),
        ("instance-data", "a cloud metadata service name"),
        ("status.example.com", ""),
        ("10.0.0.5", ""),
        ("127.0.0.1", ""),
        ("deadbeef", ""),
    ],
)
def test_unsafe_hosts(host, why):
    assert unsafe_host(host) == why


def test_the_allow_list_check_names_each_list_and_host(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["status.example.com", "fe80::1"]
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = ["rec.example.com"]
    (warning,) = check_deploy_allow_lists()
    assert warning.id == "schedules.W004"
    assert "SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS holds 'fe80::1'" in warning.msg
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["status.example.com"]
    assert check_deploy_allow_lists() == []


def test_call_command_check_deploy_reports_them(settings, capsys):
    """The same warnings through call_command (DEBUG is off under pytest)."""
    settings.DEBUG = False
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = ["169.254.169.254"]
    call_command("check", deploy=True)
    err = capsys.readouterr().err
    for check_id in ("schedules.W002", "schedules.W003", "schedules.W004"):
        assert check_id in err

    settings.CELERY_BROKER_URL = "redis://redis.example.com:6379/0"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}
    settings.SCHEDULES_RECORDING_ALLOWED_HOSTS = ["rec.example.com"]
    call_command("check", deploy=True)
    err = capsys.readouterr().err
    for check_id in ("schedules.W002", "schedules.W003", "schedules.W004"):
        assert check_id not in err
