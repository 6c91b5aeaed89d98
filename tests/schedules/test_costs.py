"""Costs at list prices: a job's estimate, each engine's load over 30 days, and where the
admin shows them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from schedules import costs, recurrence, services
from schedules.models import Precision

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
SFN_ARN = "arn:aws:states:us-east-1:1:stateMachine:t"


@pytest.fixture
def frozen(time_machine: Any) -> dt.datetime:
    time_machine.move_to(NOW, tick=False)
    return NOW


@pytest.fixture
def priced(settings: Any, recording_engine: Any) -> None:
    """seconds → a recording engine priced like Step Functions; relaxed → local."""
    settings.SCHEDULES_ENGINES = {"seconds": "recording", "minute": "recording", "relaxed": "local"}
    settings.SCHEDULES_ENGINE_PRICES = {"recording": "0.0000504"}


def every(minutes: int, **extra: Any) -> dict[str, Any]:
    return {
        "schedule_type": "rate",
        "rate_every": minutes,
        "rate_unit": "minutes",
        "starts_at": NOW,
        **extra,
    }


def test_a_rate_rule_runs_by_arithmetic_and_stops_at_its_end():
    rule = recurrence.Rule(kind="rate", starts_at=NOW, every=5, unit="minutes")
    assert costs.runs_in(rule, now=NOW, period=costs.MONTH) == 30 * 24 * 12
    ended = recurrence.Rule(
        kind="rate", starts_at=NOW, every=1, unit="hours", ends_at=NOW + dt.timedelta(days=1)
    )
    assert costs.runs_in(ended, now=NOW, period=costs.MONTH) == 24


def test_a_cron_rule_is_counted_then_extrapolated_when_busy():
    daily = recurrence.Rule(kind="cron", starts_at=NOW, cron="0 9 * * *", time_zone="Europe/Paris")
    assert costs.runs_in(daily, now=NOW, period=costs.MONTH) == 30
    minutely = recurrence.Rule(kind="cron", starts_at=NOW, cron="* * * * *")
    assert costs.runs_in(minutely, now=NOW, period=costs.MONTH) == 30 * 1440


def test_a_recurring_job_costs_its_runs_at_its_engine_price(frozen, priced):
    job = services.job_schedule(action="noop", **every(5))
    cost = costs.job_cost(job)
    assert cost is not None
    assert (cost.engine, cost.price, cost.runs_per_month) == (
        "recording",
        Decimal("0.0000504"),
        8640,
    )
    assert cost.per_month == Decimal("0.0000504") * 8640  # $0.44


def test_max_runs_caps_the_estimate_and_a_one_off_job_costs_one_timer(frozen, priced):
    capped = services.job_schedule(action="noop", **every(5, max_runs=10))
    assert costs.job_cost(capped).runs_per_month == 10
    once = services.job_schedule(
        action="noop", due_at=NOW + dt.timedelta(hours=1), precision=Precision.RELAXED
    )
    cost = costs.job_cost(once)
    assert (cost.engine, cost.price, cost.per_month) == ("local", Decimal(0), None)


def test_each_engine_load_counts_pending_steps_and_projected_recurring_runs(frozen, priced):
    services.job_schedule(action="noop", due_at=NOW + dt.timedelta(days=1))
    services.job_schedule(action="noop", due_at=NOW + dt.timedelta(days=40))  # beyond 30 days
    services.job_schedule(action="noop", **every(60))  # 720 runs, 1 of them pending
    services.job_schedule(
        action="noop", due_at=NOW + dt.timedelta(hours=2), precision=Precision.RELAXED
    )
    loads = {load.engine: load for load in costs.engines_load()}
    recording = loads["recording"]
    assert (recording.steps, recording.recurring_runs) == (2, 719)
    assert recording.timers == 721
    assert recording.per_month == Decimal("0.0000504") * 721
    assert (loads["local"].steps, loads["local"].per_month) == (1, 0)


def test_the_job_page_shows_its_estimated_cost(frozen, priced, admin_client):
    job = services.job_schedule(action="noop", **every(5))
    page = admin_client.get(reverse("admin:schedules_job_change", args=[job.pk])).content.decode()
    assert "estimated cost" in page.lower()
    assert "$0.0000504 per run on recording; about 8,640 runs in the next 30 days: $0.44" in page


def test_the_overview_shows_each_engine_pending_load(frozen, priced, admin_client):
    services.job_schedule(action="noop", **every(1))  # 43,200 runs
    answer = admin_client.get(reverse("admin:schedules_overview_cost")).json()
    (row,) = [r for r in answer["engines"] if r["engine"] == "recording"]
    assert (row["steps"], row["recurring_runs"], row["cost"]) == (1, 43199.0, "$2.18")
    assert answer["total"] == "$2.18" and answer["period_days"] == 30
    page = admin_client.get(reverse("admin:schedules_overview")).content.decode()
    assert "Timer cost, next 30 days" in page and "$2.18" in page


def test_format_usd_keeps_small_prices_readable():
    assert costs.format_usd(Decimal("0.0000504")) == "$0.0000504"
    assert costs.format_usd(Decimal("1234.567")) == "$1,234.57"
    assert costs.format_usd(Decimal(0)) == "$0"
