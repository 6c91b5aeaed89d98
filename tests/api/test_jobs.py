"""The REST API for jobs: auth, ownership, CRUD through the services, idempotency, bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from schedules import services
from schedules.dispatcher import Dispatcher
from schedules.models import IdempotencyRecord, Job, Run, RunStatus, Step

from .conftest import client_for, grant

pytestmark = pytest.mark.django_db


def iso(value: dt.datetime) -> str:
    return value.isoformat()


def soon(**delta: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(**(delta or {"hours": 1}))


EMAIL = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi"}


def create(api: APIClient, **overrides: Any) -> Any:
    body = {"action": "send_email", "payload": EMAIL, "due_at": iso(soon())} | overrides
    return api.post("/api/jobs/", body, format="json")


def test_anonymous_requests_get_401():
    response = APIClient().get("/api/jobs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_create_goes_through_the_service_and_returns_the_job(api, alice):
    response = create(api, name="welcome", precision="relaxed")
    assert response.status_code == 201, response.json()
    body = response.json()
    job = Job.objects.get(pk=body["id"])
    assert job.owner == alice and job.name == "welcome" and job.precision == "relaxed"
    assert body["payload"] == EMAIL and body["status"] == "scheduled"
    (step,) = body["steps"]
    assert step["engine"] == "local" and step["version"] == 1
    assert step["expected_lateness"]


def test_list_filters_and_cursor_pages(api, alice):
    now = timezone.now()
    for hours in range(1, 6):
        services.job_schedule(action="noop", due_at=now + dt.timedelta(hours=hours), owner=alice)
    services.email_schedule(
        to=["a@example.com"], subject="s", body="b", due_at=now + dt.timedelta(days=2), owner=alice
    )
    response = api.get("/api/jobs/", {"action": "noop", "page_size": 2})
    page = response.json()
    assert len(page["results"]) == 2 and page["next"] and "cursor=" in page["next"]
    ids = [j["id"] for j in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        ids += [j["id"] for j in page["results"]]
    assert len(ids) == len(set(ids)) == 5
    window = api.get(
        "/api/jobs/",
        {
            "due_after": iso(now + dt.timedelta(hours=2, minutes=1)),
            "due_before": iso(now + dt.timedelta(hours=4, minutes=1)),
        },
    )
    assert len(window.json()["results"]) == 2
    assert api.get("/api/jobs/", {"status": "cancelled"}).json()["results"] == []


def test_retrieve_has_steps_and_runs(api, alice):
    job = services.job_schedule(action="noop", due_at=timezone.now(), owner=alice)
    step = job.steps.get()
    services.step_execute(step_id=step.pk, version=1)
    body = api.get(f"/api/jobs/{job.pk}/").json()
    assert body["steps"][0]["state"] == "succeeded"
    (run,) = body["runs"]
    assert run["status"] == "succeeded" and run["lateness_seconds"] >= 0


def test_patch_reschedules_and_updates(api, alice):
    job = services.job_schedule(action="send_email", payload=EMAIL, due_at=soon(), owner=alice)
    later = soon(hours=3)
    response = api.patch(
        f"/api/jobs/{job.pk}/",
        {"due_at": iso(later), "payload": {**EMAIL, "subject": "New"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    step = Step.objects.get(job=job)
    job.refresh_from_db()
    assert step.version == 2 and step.due_at == later and job.payload["subject"] == "New"


def test_patch_is_all_or_nothing(api, alice):
    job = services.job_schedule(action="send_email", payload=EMAIL, due_at=soon(), owner=alice)
    response = api.patch(
        f"/api/jobs/{job.pk}/", {"name": "renamed", "due_at": iso(soon(days=-3))}, format="json"
    )
    assert response.status_code == 400
    assert "in the past" in response.json()["due_at"][0]
    job.refresh_from_db()
    assert job.name == ""  # the update before the refused reschedule was rolled back


def test_cancel_and_run_now(api, alice):
    job = services.job_schedule(action="noop", due_at=soon(), owner=alice)
    assert api.post(f"/api/jobs/{job.pk}/run-now/").json()["steps"][0]["version"] == 2
    assert api.post(f"/api/jobs/{job.pk}/cancel/").json()["status"] == "cancelled"
    again = api.post(f"/api/jobs/{job.pk}/cancel/")
    assert again.status_code == 400 and "already cancelled" in again.json()["status"][0]


def test_a_user_cannot_read_cancel_or_reschedule_another_users_job(bob_api, alice):
    job = services.job_schedule(action="noop", due_at=soon(), owner=alice)
    assert bob_api.get(f"/api/jobs/{job.pk}/").status_code == 404
    assert bob_api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 404
    assert (
        bob_api.patch(
            f"/api/jobs/{job.pk}/", {"due_at": iso(soon(hours=2))}, format="json"
        ).status_code
        == 404
    )
    assert bob_api.get("/api/jobs/").json()["results"] == []
    assert bob_api.get("/api/runs/", {"job": job.pk}).json()["results"] == []
    job.refresh_from_db()
    assert job.status == "scheduled" and job.steps.get().version == 1


def test_model_permissions_and_staff_widen_the_scope(bob, alice):
    job = services.job_schedule(action="noop", due_at=soon(), owner=alice)
    viewer = client_for(grant(bob, "view_job"))
    assert viewer.get(f"/api/jobs/{job.pk}/").status_code == 200
    assert viewer.post(f"/api/jobs/{job.pk}/cancel/").status_code == 403
    changer = client_for(grant(bob, "view_job", "change_job"))
    assert changer.post(f"/api/jobs/{job.pk}/cancel/").status_code == 200
    alice.is_staff = True
    alice.save()
    other = services.job_schedule(action="noop", due_at=soon(), owner=bob)
    assert client_for(alice).get(f"/api/jobs/{other.pk}/").status_code == 200


def test_idempotency_key_makes_retries_safe(api):
    key = {"HTTP_IDEMPOTENCY_KEY": "order-42"}
    body = {"action": "noop", "due_at": iso(soon())}
    first = api.post("/api/jobs/", body, format="json", **key)
    second = api.post("/api/jobs/", body, format="json", **key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() and second["Idempotent-Replayed"] == "true"
    assert Job.objects.count() == 1
    conflict = api.post("/api/jobs/", {**body, "name": "other"}, format="json", **key)
    assert conflict.status_code == 409
    assert "different request body" in conflict.json()["Idempotency-Key"][0]
    assert Job.objects.count() == 1


def test_idempotency_keys_expire(api, settings):
    settings.SCHEDULES_IDEMPOTENCY_TTL = 60
    key = {"HTTP_IDEMPOTENCY_KEY": "k"}
    body = {"action": "noop", "due_at": iso(soon())}
    api.post("/api/jobs/", body, format="json", **key)
    IdempotencyRecord.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert api.post("/api/jobs/", body, format="json", **key).status_code == 201
    assert Job.objects.count() == 2


def test_the_sweep_forgets_expired_keys_and_keeps_live_ones(api):
    api.post("/api/jobs/", {"action": "noop", "due_at": iso(soon())}, HTTP_IDEMPOTENCY_KEY="a")
    api.post("/api/jobs/", {"action": "noop", "due_at": iso(soon())}, HTTP_IDEMPOTENCY_KEY="b")
    IdempotencyRecord.objects.filter(key="a").update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    Dispatcher(sweep_interval=3600).sweep()
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["b"]


def test_a_failed_create_stores_no_key(api):
    key = {"HTTP_IDEMPOTENCY_KEY": "k2"}
    assert create(api, due_at="tomorrow", **key).status_code == 400
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"due_at": "2030-01-01T09:00:00"}, "due_at", "must include a time zone offset"),
        ({"due_at": "2030-01-01T09:61:00Z"}, "due_at", "Datetime has wrong format"),
        ({"due_at": "2020-01-01T09:00:00Z"}, "due_at", "in the past by more than"),
        ({"due_at": "2099-01-01T09:00:00Z"}, "due_at", "SCHEDULES_MAX_AHEAD"),
        ({"payload": {**EMAIL, "to": ["nope"]}}, "payload", "to.0: 'nope' is not a valid email"),
        ({"action": "send_emial"}, "action", "is not a valid choice"),
        ({"payload": {**EMAIL, "body": "x" * 70_000}}, "payload", "the limit is 65536 bytes"),
        ({"max_attempts": 0}, "max_attempts", "from 1 to"),
        ({"time_zone": "Mars/Base"}, "time_zone", "not a known time zone"),
        ({"payload": [1, 2]}, "payload", "must be a JSON object"),
        ({"payload": {**EMAIL, "subject": "a\x00b"}}, "payload", "NUL character"),
        ({"name": "a\x00b"}, "name", "Null characters are not allowed"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_the_rule(api, overrides, field, text):
    response = create(api, **overrides)
    assert response.status_code == 400
    messages = response.json()[field]
    assert any(text in m for m in messages), response.json()
    assert not Job.objects.exists() and not Step.objects.exists()


@pytest.mark.parametrize("body", ['{"action": "noop",', "[" * 100_000 + "]" * 100_000])
def test_malformed_json_is_a_400(api, body):
    response = api.post("/api/jobs/", body, content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Job.objects.exists()


def test_throttling_returns_429_with_retry_after(api, settings):
    from rest_framework.throttling import UserRateThrottle

    cache.clear()
    original = UserRateThrottle.THROTTLE_RATES
    UserRateThrottle.THROTTLE_RATES = {**original, "user": "3/minute"}
    try:
        codes = [api.get("/api/jobs/").status_code for _ in range(4)]
        limited = api.get("/api/jobs/")
    finally:
        UserRateThrottle.THROTTLE_RATES = original
        cache.clear()
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    assert int(limited["Retry-After"]) > 0


def test_runs_are_read_only_and_filterable(api, alice):
    job = services.job_schedule(action="noop", due_at=timezone.now(), owner=alice)
    services.step_execute(step_id=job.steps.get().pk, version=1)
    runs = api.get("/api/runs/", {"job": job.pk, "status": "succeeded"}).json()["results"]
    assert len(runs) == 1 and runs[0]["engine"] == "local"
    assert api.post("/api/runs/", {}, format="json").status_code == 405
    assert api.get("/api/runs/", {"status": RunStatus.FAILED}).json()["results"] == []
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("due_before=0500-04-16T02:18:07-17:40", ""),  # an offset PostgreSQL refuses
        ("due_after=2030-01-01T09:00:00", "must include a time zone offset"),
        ("due_after=0001-01-01T00:00:00%2B01:00", "out of range once converted to UTC"),
        ("due_after=tomorrow", "wrong format"),
    ],
)
def test_date_filters_need_an_offset_and_are_compared_in_utc(api, query, text):
    response = api.get(f"/api/jobs/?{query}")
    if text:
        assert response.status_code == 400
        assert text in str(response.json()[query.split("=")[0]])
    else:
        assert response.status_code == 200


def test_a_due_time_with_any_offset_is_stored_as_utc(api):
    due = timezone.now() + dt.timedelta(hours=3)
    far_offset = due.astimezone(dt.timezone(-dt.timedelta(hours=17, minutes=40)))
    response = create(api, due_at=far_offset.isoformat())
    assert response.status_code == 201, response.json()
    assert Job.objects.get().due_at == due


def test_precision_classes_and_the_earlier_name(api):
    minute = create(api, precision="minute")
    assert minute.status_code == 201 and minute.json()["precision"] == "minute"
    # "precise" was the seconds class's name: still read, answered as "seconds".
    legacy = create(api, precision="precise")
    assert legacy.status_code == 201 and legacy.json()["precision"] == "seconds"
    assert Job.objects.get(pk=legacy.json()["id"]).precision == "seconds"
    wrong = create(api, precision="exact")
    assert wrong.status_code == 400 and "precision" in wrong.json()
    assert Job.objects.count() == 2
