"""Settings come from the environment; production settings are safe."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO", "SECRET", "ALLOWED", "DATABASE", "DEBUG"))
    }
    base.update(
        {
            "SCHEDULES_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "scheduler_project.settings",
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "scheduler.example.com",
        **extra,
    }


def test_production_passes_check_deploy_with_no_warnings(tmp_path):
    # With its production parts (the embedded ones warn: tests/schedules/test_deploy_checks.py).
    parts = {
        "DATABASE_URL": "postgres://schedules@db.example.com:5432/schedules",
        "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
        "CACHE_URL": "rediscache://redis.example.com:6379/1",
    }
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=production(**parts), tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_turns_debug_off_even_if_asked(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
        env=production(DEBUG="true"),
        tmp_path=tmp_path,
    )
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_ENV": "production", "ALLOWED_HOSTS": "x.example.com"}, "SECRET_KEY"),
        (
            {"DJANGO_ENV": "production", "SECRET_KEY": "short", "ALLOWED_HOSTS": "x"},
            "at least 50 random characters",
        ),
        ({"DJANGO_ENV": "production", "SECRET_KEY": "x" * 60}, "ALLOWED_HOSTS"),
        ({"DJANGO_ENV": "staging"}, "DJANGO_ENV must be 'development' or 'production'"),
    ],
)
def test_production_refuses_to_start_without_its_settings(tmp_path, env, message):
    result = manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_database_defaults_to_sqlite_in_the_data_dir(tmp_path):
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; d = settings.DATABASES['default'];"
        " print(d['ENGINE'], d['NAME'])",
        env={},
        tmp_path=tmp_path,
    )
    engine, name = result.stdout.strip().splitlines()[-1].split()
    assert engine == "django.db.backends.sqlite3" and name == str(tmp_path / "db.sqlite3")


def test_an_unknown_engine_fails_the_system_check_with_a_suggestion(tmp_path):
    result = manage("check", env={"SCHEDULES_ENGINE_SECONDS": "locl"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Unknown schedules engine 'locl'" in result.stderr
    assert "Did you mean 'local'?" in result.stderr


def test_the_sqs_worker_reserves_one_message_per_process(tmp_path):
    """On SQS a reserved message's visibility clock runs: none may wait behind a task."""
    result = manage(
        "shell",
        "-c",
        "from scheduler_project.celery import app; c = app.conf;"
        " o = c.broker_transport_options;"
        " print(c.worker_prefetch_multiplier, o['visibility_timeout'], o['wait_time_seconds'],"
        " list(o['predefined_queues']))",
        env={
            "CELERY_BROKER_URL": "sqs://",
            "SCHEDULES_SQS_QUEUE_URL": "http://127.0.0.1:1/123456789012/schedules",
        },
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1 1860 10 ['schedules']"
