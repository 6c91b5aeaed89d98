"""Lateness monitoring: what each engine really delivered, shown in the admin."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from schedules import selectors, services
from schedules.models import Run, RunStatus

pytestmark = pytest.mark.django_db


def add_runs(
    engine: str,
    lateness_ms: list[int],
    *,
    age: dt.timedelta = dt.timedelta(0),
    status: str = RunStatus.SUCCEEDED,
) -> None:
    step = services.job_schedule(action="noop", due_at=timezone.now()).steps.get()
    now = timezone.now() - age
    Run.objects.bulk_create(
        Run(
            step=step,
            job_id=step.job_id,
            action="noop",
            engine=engine,
            version=1,
            attempt=1,
            status=status,
            due_at=now,
            started_at=now,
            lateness=dt.timedelta(milliseconds=ms),
        )
        for ms in lateness_ms
    )


def test_percentiles_per_engine_over_the_window(settings):
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "dynamodb_ttl"}
    add_runs("local", list(range(1, 101)))  # 1..100 ms
    add_runs("dynamodb_ttl", [60_000, 120_000, 900_000])
    add_runs("local", [999_999], age=dt.timedelta(days=2))  # outside the window
    add_runs("local", [888_888], status=RunStatus.SKIPPED)  # not an attempt
    report = {row.engine: row for row in selectors.lateness_by_engine()}
    local = report["local"]
    assert local.runs == 100
    assert local.p50 == dt.timedelta(milliseconds=50)
    assert local.p95 == dt.timedelta(milliseconds=95)
    assert local.max == dt.timedelta(milliseconds=100)
    ttl = report["dynamodb_ttl"]
    assert (ttl.runs, ttl.max) == (3, dt.timedelta(minutes=15))
    assert "SCHEDULES_TTL_MAX_LATENESS" in ttl.expected


def test_an_engine_with_no_runs_is_listed_empty():
    (row,) = selectors.lateness_by_engine()
    assert (row.engine, row.runs, row.p50, row.max) == ("local", 0, None, None)


def test_the_run_list_shows_lateness_by_engine(admin_client):
    add_runs("local", [5, 10, 15])
    response = admin_client.get(reverse("admin:schedules_run_changelist"))
    page = response.content.decode()
    assert "Lateness by engine, last 24 hours" in page
    assert "<td>local</td><td>3</td><td>+10 ms</td><td>+15 ms</td><td>+15 ms</td>" in page


def test_the_step_list_shows_the_engine_and_its_expected_lateness(admin_client):
    services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))
    page = admin_client.get(reverse("admin:schedules_step_changelist")).content.decode()
    assert "milliseconds (see docs/benchmarks.md)" in page
