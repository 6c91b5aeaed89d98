"""Workflow definitions over the REST API: saved checked and versioned, owned, idempotent."""

from __future__ import annotations

import pytest

from schedules.models import Workflow, WorkflowVersion
from tests.schedules.test_services_workflows import definition

pytestmark = pytest.mark.django_db


def test_create_read_update_a_workflow(api, alice):
    created = api.post(
        "/api/workflows/", {"name": "nightly", "definition": definition()}, format="json"
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["name"], body["version"], body["owner"]) == ("nightly", 1, alice.pk)
    assert body["definition"] == definition()
    url = f"/api/workflows/{body['id']}/"
    changed = api.patch(url, {"definition": definition(seconds=9)}, format="json")
    assert changed.status_code == 200 and changed.json()["version"] == 2
    listed = api.get("/api/workflows/").json()["results"]
    assert [(w["name"], w["version"]) for w in listed] == [("nightly", 2)]
    assert "definition" not in listed[0]
    assert api.get(url).json()["definition"] == definition(seconds=9)
    assert WorkflowVersion.objects.filter(workflow_id=body["id"]).count() == 2


def test_a_refused_definition_is_a_400_naming_state_and_field(api):
    bad = definition()
    del bad["States"]["Pause"]["Seconds"]
    response = api.post("/api/workflows/", {"name": "x", "definition": bad}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "definition": ["States.Pause: needs exactly one of Seconds or TimestampPath"]
    }
    assert not Workflow.objects.exists()
    taken = api.post("/api/workflows/", {"name": "x y", "definition": definition()}, format="json")
    assert taken.status_code == 400 and "name" in taken.json()


def test_another_users_workflow_is_404_and_the_same_key_replays(api, bob_api):
    key = {"HTTP_IDEMPOTENCY_KEY": "wf-1"}
    first = api.post(
        "/api/workflows/", {"name": "mine", "definition": definition()}, format="json", **key
    )
    again = api.post(
        "/api/workflows/", {"name": "mine", "definition": definition()}, format="json", **key
    )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and Workflow.objects.count() == 1
    url = f"/api/workflows/{first.json()['id']}/"
    assert bob_api.get(url).status_code == 404
    assert bob_api.patch(url, {"description": "hers"}, format="json").status_code == 404
    assert bob_api.get("/api/workflows/").json()["results"] == []


def _workflow(api, name: str = "nightly", **fields) -> dict:
    created = api.post(
        "/api/workflows/", {"name": name, "definition": definition(), **fields}, format="json"
    )
    assert created.status_code == 201, created.json()
    return created.json()


def test_start_list_show_and_cancel_executions(api, alice):
    workflow = _workflow(api)
    assert (workflow["precision"], workflow["overlap_policy"]) == ("seconds", "skip")
    started = api.post(
        f"/api/workflows/{workflow['id']}/start/",
        {"input": {"env": "prod"}, "start_key": "run-1"},
        format="json",
    )
    assert started.status_code == 201, started.json()
    body = started.json()
    assert (body["status"], body["state_name"], body["owner"]) == ("running", "Ping", alice.pk)
    assert body["data"] == {"env": "prod"} and body["version"] == 1
    assert [h["state"] for h in body["history"]] == ["Ping"]
    assert [(s["state_name"], s["action"], s["state"]) for s in body["steps"]] == [
        ("Ping", "noop", "scheduled")
    ]
    again = api.post(
        f"/api/workflows/{workflow['id']}/start/", {"start_key": "run-1"}, format="json"
    )
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    overlapping = api.post(f"/api/workflows/{workflow['id']}/start/", {}, format="json")
    assert overlapping.status_code == 409
    assert overlapping.json()["workflow"][0].startswith(f"execution {body['id']} of 'nightly'")

    listed = api.get("/api/executions/", {"workflow": "nightly", "status": "running"}).json()
    assert [e["id"] for e in listed["results"]] == [body["id"]]
    assert "data" not in listed["results"][0]
    cancelled = api.post(f"/api/executions/{body['id']}/cancel/")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["steps"][0]["state"] == "cancelled"
    twice = api.post(f"/api/executions/{body['id']}/cancel/")
    assert twice.status_code == 400 and "status" in twice.json()


def test_bad_start_input_is_a_400_naming_the_field(api):
    workflow = _workflow(api)
    response = api.post(f"/api/workflows/{workflow['id']}/start/", {"input": [1, 2]}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "input": ["must be a JSON object (the execution's data starts as it)"]
    }


def test_executions_are_owned(api, bob_api):
    workflow = _workflow(api)
    started = api.post(f"/api/workflows/{workflow['id']}/start/", {}, format="json").json()
    assert bob_api.post(f"/api/workflows/{workflow['id']}/start/", {}).status_code == 404
    assert bob_api.get(f"/api/executions/{started['id']}/").status_code == 404
    assert bob_api.post(f"/api/executions/{started['id']}/cancel/").status_code == 404
    assert bob_api.get("/api/executions/").json()["results"] == []


def test_a_workflow_rule_is_set_and_removed(api):
    workflow = _workflow(api, overlap_policy="allow")
    url = f"/api/workflows/{workflow['id']}/schedule/"
    bad = api.post(url, {"schedule_type": "cron", "cron": "every day"}, format="json")
    assert bad.status_code == 400 and "cron" in bad.json()
    response = api.post(
        url,
        {"schedule_type": "rate", "rate_every": 8, "rate_unit": "hours", "time_zone": "UTC"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    rule = response.json()["schedule"]
    assert (rule["schedule_type"], rule["rate_every"], rule["status"]) == ("rate", 8, "scheduled")
    removed = api.delete(url)
    assert removed.status_code == 200 and removed.json()["schedule"] is None


def test_the_schema_has_the_execution_endpoints(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert "post" in paths["/api/workflows/{id}/start/"]
    assert "post" in paths["/api/executions/{id}/cancel/"]
    assert "get" in paths["/api/executions/"]
