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
