"""The REST API's pause and resume: jobs, classrooms and workflows' rules; ownership as for
cancel, a repeated pause is a no-op 200, Idempotency-Key as on the other POST actions,
pause_after_failures, and errors naming the field and the rule."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from schedules import services
from schedules.models import IdempotencyRecord, Job, PlanStatus, StepState

from .conftest import grant

pytestmark = pytest.mark.django_db


def soon() -> dt.datetime:
    return timezone.now() + dt.timedelta(hours=1)


def a_job(owner, **kw):
    return services.job_schedule(action="noop", due_at=soon(), owner=owner, **kw)


def test_pause_then_resume_a_job(api, alice):
    job = a_job(alice)
    paused = api.post(f"/api/jobs/{job.pk}/pause/", {"reason": "new template"}, format="json")
    assert paused.status_code == 200, paused.content
    body = paused.json()
    assert body["status"] == "paused" and body["pause_reason"] == "new template"
    assert body["paused_at"] is not None
    assert [step["state"] for step in body["steps"]] == ["paused"]
    # Pausing a paused job changes nothing: 200, the same pause.
    again = api.post(f"/api/jobs/{job.pk}/pause/", {"reason": "other"}, format="json")
    assert again.status_code == 200 and again.json()["pause_reason"] == "new template"
    listed = api.get("/api/jobs/", {"status": "paused"}).json()["results"]
    assert [j["id"] for j in listed] == [job.pk]

    resumed = api.post(f"/api/jobs/{job.pk}/resume/")
    assert resumed.status_code == 200, resumed.content
    body = resumed.json()
    assert body["status"] == "scheduled" and body["paused_at"] is None
    assert [step["state"] for step in body["steps"]] == ["scheduled"]
    assert api.post(f"/api/jobs/{job.pk}/resume/").status_code == 200  # not paused: no-op


def test_pause_without_a_body_and_resume_with_an_idempotency_key(api, alice):
    job = a_job(alice)
    assert api.post(f"/api/jobs/{job.pk}/pause/").json()["pause_reason"] == ""
    headers = {"HTTP_IDEMPOTENCY_KEY": "resume-1"}
    first = api.post(f"/api/jobs/{job.pk}/resume/", **headers)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first
    services.job_pause(job=job)  # paused again meanwhile by someone else
    replay = api.post(f"/api/jobs/{job.pk}/resume/", **headers)
    assert replay.status_code == 200 and replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    job.refresh_from_db()
    assert job.status == PlanStatus.PAUSED  # the retry changed nothing
    conflict = api.post(
        f"/api/jobs/{job.pk}/pause/", {"reason": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    assert conflict.status_code == 200
    other = api.post(
        f"/api/jobs/{job.pk}/pause/", {"reason": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="p"
    )
    assert other.status_code == 409
    assert IdempotencyRecord.objects.count() == 2


def test_bad_input_and_ended_jobs_are_400s_naming_the_field(api, alice):
    job = a_job(alice)
    long = api.post(f"/api/jobs/{job.pk}/pause/", {"reason": "x" * 501}, format="json")
    assert long.status_code == 400
    assert long.json() == {"reason": ["is 501 characters; the limit is 500"]}
    unknown = api.post(f"/api/jobs/{job.pk}/pause/", {"colour": "red"}, format="json")
    assert unknown.status_code == 400 and "colour" in unknown.json()
    services.job_cancel(job=job)
    for verb in ("pause", "resume"):
        response = api.post(f"/api/jobs/{job.pk}/{verb}/")
        assert response.status_code == 400
        assert response.json() == {"status": [f"a cancelled job cannot be {verb}d"]}


def test_ownership_is_as_for_cancel(api, bob_api, alice, bob):
    job = a_job(alice)
    assert bob_api.post(f"/api/jobs/{job.pk}/pause/").status_code == 404
    viewer = grant(bob, "view_job")
    from .conftest import client_for

    assert client_for(viewer).post(f"/api/jobs/{job.pk}/pause/").status_code == 403
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED
    editor = grant(bob, "change_job")
    assert client_for(editor).post(f"/api/jobs/{job.pk}/pause/").status_code == 200


def test_pause_after_failures_is_set_and_checked_through_the_api(api, alice):
    created = api.post(
        "/api/jobs/",
        {
            "action": "noop",
            "schedule_type": "rate",
            "rate_every": 1,
            "rate_unit": "hours",
            "pause_after_failures": 3,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["pause_after_failures"] == 3 and body["consecutive_failures"] == 0
    changed = api.patch(f"/api/jobs/{body['id']}/", {"pause_after_failures": 0}, format="json")
    assert changed.status_code == 400
    (message,) = changed.json()["pause_after_failures"]
    assert message.startswith("must be a whole number from 1 to")
    once = api.post(
        "/api/jobs/",
        {"action": "noop", "due_at": soon().isoformat(), "pause_after_failures": 2},
        format="json",
    )
    assert once.status_code == 400
    assert once.json() == {
        "pause_after_failures": [
            "applies to a recurring job only (a one-off job ends when it fails)"
        ]
    }
    cleared = api.patch(f"/api/jobs/{body['id']}/", {"pause_after_failures": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["pause_after_failures"] is None


def test_pause_and_resume_a_classroom(api, alice):
    start = soon()
    classroom = services.classroom_create(
        title="Maths",
        start=start,
        end=start + dt.timedelta(minutes=3),
        recording_service_ref="room-1",
        owner=alice,
    )
    paused = api.post(f"/api/classrooms/{classroom.pk}/pause/", {"reason": "x"}, format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["status"] == "paused"
    assert {step["state"] for step in paused.json()["steps"]} == {StepState.PAUSED}
    assert [c["id"] for c in api.get("/api/classrooms/", {"status": "paused"}).json()["results"]]
    resumed = api.post(f"/api/classrooms/{classroom.pk}/resume/")
    assert resumed.status_code == 200 and resumed.json()["status"] == "scheduled"
    services.classroom_cancel(classroom=classroom)
    refused = api.post(f"/api/classrooms/{classroom.pk}/pause/")
    assert refused.status_code == 400
    assert refused.json() == {"status": ["a cancelled classroom cannot be paused"]}


def test_pause_and_resume_a_workflow_s_rule(api, alice):
    workflow = services.workflow_create(
        name="nightly",
        definition={"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}},
        owner=alice,
    )
    none = api.post(f"/api/workflows/{workflow.pk}/pause/")
    assert none.status_code == 400 and list(none.json()) == ["schedule"]
    job = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours"
    )
    paused = api.post(f"/api/workflows/{workflow.pk}/pause/", {"reason": "r"}, format="json")
    assert paused.status_code == 200, paused.content
    assert paused.json()["schedule"]["status"] == "paused"
    assert paused.json()["schedule"]["pause_reason"] == "r"
    resumed = api.post(f"/api/workflows/{workflow.pk}/resume/")
    assert resumed.json()["schedule"]["status"] == "scheduled"
    assert Job.objects.get(pk=job.pk).status == PlanStatus.SCHEDULED
