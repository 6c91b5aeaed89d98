"""Classrooms over the API, and the OpenAPI schema that describes it."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from schedules import services
from schedules.models import Classroom, Step, StepState

pytestmark = pytest.mark.django_db


def body(begin: dt.datetime, minutes: int = 3, **overrides: object) -> dict:
    return {
        "title": "Maths",
        "start": begin.isoformat(),
        "end": (begin + dt.timedelta(minutes=minutes)).isoformat(),
        "recording_service_ref": "room-1",
        "live_ping_interval": 60,
    } | overrides


def test_create_update_cancel_a_classroom(api, alice):
    start = timezone.now() + dt.timedelta(hours=1)
    created = api.post("/api/classrooms/", body(start), format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert [s["action"] for s in data["steps"]] == [
        "start_recording",
        "live_ping",
        "live_ping",
        "stop_recording",
    ]
    classroom = Classroom.objects.get(pk=data["id"])
    assert classroom.owner == alice
    moved = api.patch(
        f"/api/classrooms/{classroom.pk}/",
        {"end": (start + dt.timedelta(minutes=2)).isoformat()},
        format="json",
    )
    assert moved.status_code == 200
    assert classroom.steps.exclude(state=StepState.CANCELLED).count() == 3
    cancelled = api.post(f"/api/classrooms/{classroom.pk}/cancel/")
    assert cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"minutes": -5}, "end", "must be after the start"),
        ({"live_ping_interval": 1}, "live_ping_interval", "at least 5"),
        ({"start": "2030-01-01T09:00:00"}, "start", "must include a time zone offset"),
        ({"room": "x"}, "room", "unknown field"),
    ],
)
def test_bad_classrooms_are_refused(api, overrides, field, text):
    start = timezone.now() + dt.timedelta(hours=1)
    minutes = overrides.pop("minutes", 3)
    response = api.post("/api/classrooms/", body(start, minutes, **overrides), format="json")
    assert response.status_code == 400
    assert any(text in m for m in response.json()[field]), response.json()
    assert not Classroom.objects.exists() and not Step.objects.exists()


def test_a_live_classroom_refuses_a_new_start_and_accepts_a_new_end(api, alice):
    start = timezone.now()
    classroom = services.classroom_create(
        title="t",
        start=start,
        end=start + dt.timedelta(minutes=5),
        recording_service_ref="r",
        owner=alice,
    )
    started = services.step_execute(
        step_id=classroom.steps.get(action="start_recording").pk, version=1
    )
    assert started is not None and started.status == "succeeded"
    url = f"/api/classrooms/{classroom.pk}/"
    later = (start + dt.timedelta(minutes=10)).isoformat()

    refused = api.patch(url, {"start": later}, format="json")

    assert refused.status_code == 400
    (message,) = refused.json()["start"]
    assert "the recording already started at" in message and "only move its end" in message
    assert Classroom.objects.get(pk=classroom.pk).start == start
    moved = api.patch(url, {"end": later}, format="json")
    assert moved.status_code == 200, moved.json()
    assert Classroom.objects.get(pk=classroom.pk).end == start + dt.timedelta(minutes=10)


def test_another_users_classroom_is_404(bob_api, alice):
    start = timezone.now() + dt.timedelta(hours=1)
    classroom = services.classroom_create(
        title="t",
        start=start,
        end=start + dt.timedelta(minutes=5),
        recording_service_ref="r",
        owner=alice,
    )
    assert bob_api.get(f"/api/classrooms/{classroom.pk}/").status_code == 404
    assert bob_api.post(f"/api/classrooms/{classroom.pk}/cancel/").status_code == 404


def test_the_schema_generates_without_warnings(tmp_path):
    out = StringIO()
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
        stdout=out,
        stderr=out,
    )
    schema = (tmp_path / "schema.yaml").read_text()
    for path in (
        "/api/jobs/",
        "/api/jobs/{id}/cancel/",
        "/api/jobs/{id}/run-now/",
        "/api/classrooms/",
        "/api/runs/",
    ):
        assert f"{path}:" in schema
    assert "Idempotency-Key" in schema


def test_schema_and_docs_pages_are_served():
    client = APIClient()
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
