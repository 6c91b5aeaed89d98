"""The REST API for recurring and polling jobs: create, describe, re-plan, refuse bad rules."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from schedules import services
from schedules.models import Job, Step, StepState

pytestmark = pytest.mark.django_db


def soon(**delta: float) -> dt.datetime:
    return (timezone.now() + dt.timedelta(**(delta or {"hours": 1}))).replace(microsecond=0)


def create(api: APIClient, **body: Any) -> Any:
    return api.post("/api/jobs/", {"action": "noop", **body}, format="json")


def test_create_a_rate_job_returns_its_rule_and_next_occurrences(api, alice):
    start = soon()
    response = create(
        api,
        schedule_type="rate",
        rate_every=15,
        rate_unit="minutes",
        starts_at=start.isoformat(),
        max_runs=10,
        missed_policy="skip",
        overlap_policy="allow",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["schedule"] == "Every 15 minutes, at most 10 runs"
    assert body["due_at"] == start.isoformat().replace("+00:00", "Z")
    assert (body["missed_policy"], body["overlap_policy"], body["run_count"]) == (
        "skip",
        "allow",
        0,
    )
    assert [dt.datetime.fromisoformat(t) for t in body["next_occurrences"]] == [
        start + dt.timedelta(minutes=15 * k) for k in range(5)
    ]
    (step,) = body["steps"]  # one pending step: the next occurrence
    assert step["due_at"] == body["due_at"]
    assert Job.objects.get(pk=body["id"]).owner == alice


def test_create_a_cron_job_in_a_zone(api):
    response = create(api, schedule_type="cron", cron="0 9 * * 1-5", time_zone="Europe/Paris")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["schedule"] == "At 09:00 on Monday through Friday (Europe/Paris)"
    first = dt.datetime.fromisoformat(body["due_at"]).astimezone(dt.UTC)
    assert first.astimezone(ZoneInfo("Europe/Paris")).hour == 9


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"schedule_type": "cron", "cron": "0 9 * * 8"}, "cron", "Bad day-of-week"),
        ({"schedule_type": "cron", "cron": "every day"}, "cron", "must have 5 fields"),
        (
            {"schedule_type": "cron", "cron": "0 9 * * *", "time_zone": "Mars/Base"},
            "time_zone",
            "'Mars/Base' is not a known time zone",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "fortnights"},
            "rate_unit",
            "is not a valid choice",
        ),
        (
            {"schedule_type": "rate", "rate_every": 500, "rate_unit": "seconds", "min": 1000},
            "rate_every",
            "faster than the minimum of 1000 s (SCHEDULES_MIN_RATE_SECONDS)",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "ends_at": "past"},
            "ends_at",
            "must be after starts_at",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "due_at": "soon"},
            "due_at",
            "a recurring job's times come from its rule",
        ),
        (
            {"schedule_type": "rate", "rate_every": 1, "rate_unit": "hours", "starts_at": "naive"},
            "starts_at",
            "must include a time zone offset",
        ),
        ({"schedule_type": "yearly"}, "schedule_type", "is not a valid choice"),
        ({"due_at": "soon", "poll_interval": 5}, "poll_interval", "noop never reports"),
    ],
)
def test_bad_rules_are_400s_naming_the_field_and_nothing_is_stored(
    api, settings, body, field, text
):
    settings.SCHEDULES_MIN_RATE_SECONDS = body.pop("min", 1)
    start = soon()
    values = {
        "past": (start - dt.timedelta(days=1)).isoformat(),
        "soon": start.isoformat(),
        "naive": start.replace(tzinfo=None).isoformat(),
    }
    body = {k: values.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    if body.get("schedule_type") in ("rate", "cron"):
        body.setdefault("starts_at", start.isoformat())
    response = create(api, **body)
    assert response.status_code == 400, response.json()
    assert any(text in message for message in response.json()[field]), response.json()
    assert not Job.objects.exists() and not Step.objects.exists()


def test_a_poll_job_without_a_limit_is_refused(api, settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["status.example.com"]
    response = create(
        api,
        action="http_check",
        due_at=soon().isoformat(),
        payload={"url": "https://status.example.com/t/1", "field": "state", "equals": "done"},
        poll_interval=30,
    )
    assert response.status_code == 400
    assert "a poll needs a limit" in response.json()["poll_max_checks"][0]


def test_patch_changes_the_rule_and_replans_the_next_occurrence(api, alice):
    start = soon()
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=1,
        rate_unit="hours",
        starts_at=start,
        owner=alice,
    )
    old = job.steps.get()
    later = start + dt.timedelta(days=1)
    response = api.patch(
        f"/api/jobs/{job.pk}/",
        {"starts_at": later.isoformat(), "ends_at": None, "overlap_policy": "allow"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    old.refresh_from_db()
    assert old.state == StepState.CANCELLED
    body = response.json()
    assert body["due_at"].startswith(later.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body["overlap_policy"] == "allow"
    assert body["steps"][0]["state"] == "scheduled" and body["steps"][1]["state"] == "cancelled"


def test_patch_refuses_a_due_time_or_a_one_off_type_for_a_recurring_job(api, alice):
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=1,
        rate_unit="hours",
        starts_at=soon(),
        owner=alice,
    )
    response = api.patch(
        f"/api/jobs/{job.pk}/", {"due_at": soon(hours=3).isoformat()}, format="json"
    )
    assert response.status_code == 400
    assert "a recurring job's times come from its rule" in response.json()["due_at"][0]
    response = api.patch(f"/api/jobs/{job.pk}/", {"schedule_type": "once"}, format="json")
    assert response.status_code == 400 and "schedule_type" in response.json()
    assert job.steps.get().version == 1


def test_list_filters_by_schedule_type(api, alice):
    one_off = services.job_schedule(action="noop", due_at=soon(), owner=alice)
    recurring = services.job_schedule(
        action="noop", schedule_type="cron", cron="*/5 * * * *", owner=alice
    )
    ids = {
        s: [j["id"] for j in api.get(f"/api/jobs/?schedule_type={s}").json()["results"]]
        for s in ("once", "cron")
    }
    assert ids == {"once": [one_off.pk], "cron": [recurring.pk]}


def test_a_jobs_detail_lists_a_bounded_number_of_steps_latest_first(api, alice):
    job = services.job_schedule(
        action="noop", schedule_type="rate", rate_every=1, rate_unit="minutes", owner=alice
    )
    first = job.steps.get()
    Step.objects.filter(pk=first.pk).update(state=StepState.SUCCEEDED)
    Step.objects.bulk_create(
        Step(
            job=job,
            action="noop",
            sequence=k,
            due_at=first.due_at + dt.timedelta(minutes=k),
            engine="local",
            state=StepState.SUCCEEDED,
            recurring=True,
        )
        for k in range(1, 120)
    )
    steps = api.get(f"/api/jobs/{job.pk}/").json()["steps"]
    assert len(steps) == 50 and steps[0]["sequence"] == 119
