"""Workflows in the admin: saved through the services, errors next to the definition,
every version listed."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from schedules import services
from schedules.models import Workflow, WorkflowVersion
from tests.schedules.test_admin import form_errors, post_form
from tests.schedules.test_services_workflows import definition

pytestmark = pytest.mark.django_db


def test_adding_a_workflow_saves_version_one_owned_by_the_admin(admin_client, admin_user):
    response = post_form(
        admin_client,
        reverse("admin:schedules_workflow_add"),
        {"name": "nightly", "description": "", "definition": json.dumps(definition())},
    )
    assert response.status_code == 302, response.content[:2000]
    workflow = Workflow.objects.get()
    assert (workflow.name, workflow.version, workflow.owner) == ("nightly", 1, admin_user)
    assert workflow.versions.get().definition == definition()


def test_a_refused_definition_is_shown_next_to_the_field_and_nothing_is_saved(admin_client):
    bad = definition()
    bad["States"]["Pause"]["Next"] = "Dnoe"
    response = post_form(
        admin_client,
        reverse("admin:schedules_workflow_add"),
        {"name": "nightly", "description": "", "definition": json.dumps(bad)},
    )
    errors = form_errors(response)
    assert errors["definition"] == [
        "States.Pause.Next: names no state: 'Dnoe' (did you mean 'Done'?)",
        "States.Done: unreachable: no path from StartAt leads to it",
    ]
    assert "States.Pause.Next: names no state" in response.content.decode()
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()


def test_editing_the_definition_makes_the_next_version_and_lists_both(admin_client):
    workflow = services.workflow_create(name="nightly", definition=definition())
    path = reverse("admin:schedules_workflow_change", args=[workflow.pk])
    response = post_form(
        admin_client,
        path,
        {"description": "waits longer", "definition": json.dumps(definition(seconds=30))},
    )
    assert response.status_code == 302, response.content[:2000]
    workflow.refresh_from_db()
    assert (workflow.version, workflow.description) == (2, "waits longer")
    assert workflow.definition == definition(seconds=30)
    page = admin_client.get(path)
    versions = page.context["inline_admin_formsets"][0].formset.get_queryset()
    assert [str(v) for v in versions] == ["nightly v2", "nightly v1"]
    assert b"nightly v2" in page.content
    assert page.content.count(b'<g class="state"') == 3  # the drawing of the saved version
    assert b"Wait 30 s" in page.content
    # A refused edit keeps the saved version.
    bad = definition()
    bad["States"]["Pause"]["Seconds"] = "soon"
    response = post_form(admin_client, path, {"description": "", "definition": json.dumps(bad)})
    assert form_errors(response)["definition"] == ["States.Pause.Seconds: must be a number"]
    workflow.refresh_from_db()
    assert workflow.version == 2


def test_versions_are_read_only_and_workflows_are_not_deleted_here(admin_client):
    workflow = services.workflow_create(name="nightly", definition=definition())
    version = workflow.versions.get()
    assert admin_client.get(reverse("admin:schedules_workflow_changelist")).status_code == 200
    page = admin_client.get(reverse("admin:schedules_workflowversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert b'name="definition"' not in page.content  # shown, not editable
    delete = reverse("admin:schedules_workflow_delete", args=[workflow.pk])
    assert admin_client.get(delete).status_code == 403
