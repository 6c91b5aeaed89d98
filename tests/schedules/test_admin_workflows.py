"""Workflows in the admin: saved through the services, errors next to the definition,
every version listed."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from schedules import services
from schedules.models import Execution, Workflow, WorkflowVersion
from tests.schedules.test_admin import form_errors, messages_of, post_form
from tests.schedules.test_services_workflows import definition

pytestmark = pytest.mark.django_db

#: The "Running" fields as the form shows them (their defaults).
RUNNING = {"precision": "seconds", "overlap_policy": "skip"}


def test_adding_a_workflow_saves_version_one_owned_by_the_admin(admin_client, admin_user):
    response = post_form(
        admin_client,
        reverse("admin:schedules_workflow_add"),
        {"name": "nightly", "description": "", "definition": json.dumps(definition()), **RUNNING},
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
        {"name": "nightly", "description": "", "definition": json.dumps(bad), **RUNNING},
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
        {
            "description": "waits longer",
            "definition": json.dumps(definition(seconds=30)),
            **RUNNING,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    workflow.refresh_from_db()
    assert (workflow.version, workflow.description) == (2, "waits longer")
    assert workflow.definition == definition(seconds=30)
    page = admin_client.get(path)
    versions = page.context["inline_admin_formsets"][1].formset.get_queryset()
    assert [str(v) for v in versions] == ["nightly v2", "nightly v1"]
    assert b"nightly v2" in page.content
    assert page.content.count(b'<g class="state"') == 3  # the drawing of the saved version
    assert b"Wait 30 s" in page.content
    # A refused edit keeps the saved version.
    bad = definition()
    bad["States"]["Pause"]["Seconds"] = "soon"
    response = post_form(
        admin_client, path, {"description": "", "definition": json.dumps(bad), **RUNNING}
    )
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


def test_start_action_starts_an_execution_and_its_page_draws_the_path(admin_client, admin_user):
    workflow = services.workflow_create(name="nightly", definition=definition())
    changelist = reverse("admin:schedules_workflow_changelist")
    asked = admin_client.post(
        changelist, {"action": "start_selected", "_selected_action": [workflow.pk]}
    )
    assert asked.status_code == 200 and b"Start workflows" in asked.content
    done = admin_client.post(
        changelist,
        {
            "action": "start_selected",
            "_selected_action": [workflow.pk],
            "apply": "1",
            "input": '{"env": "prod"}',
            "start_key": "",
        },
        follow=True,
    )
    assert ("success", "1 execution started.") in messages_of(done)
    execution = Execution.objects.get()
    assert (execution.input, execution.owner) == ({"env": "prod"}, admin_user)
    # The Task runs; the execution is in its Wait now.
    step = execution.steps.get()
    services.step_execute(step_id=step.pk, version=step.version)
    page = admin_client.get(reverse("admin:schedules_execution_change", args=[execution.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('class="edge taken"') == 1  # Ping -> Pause
    assert html.count('class="state visited"') == 1 and 'class="state current"' in html
    assert "<td>Ping</td>" in html and "<td>Pause</td>" in html  # the history table
    assert "Steps (latest state first)" in html and "Runs (newest first)" in html
    workflow_page = admin_client.get(reverse("admin:schedules_workflow_change", args=[workflow.pk]))
    assert b"Executions (newest first)" in workflow_page.content


def test_cancel_action_cancels_running_executions_and_reports_the_others(admin_client):
    workflow = services.workflow_create(
        name="nightly", definition=definition(), overlap_policy="allow"
    )
    first = services.execution_start(workflow=workflow).execution
    second = services.execution_start(workflow=workflow).execution
    services.execution_cancel(execution=second)
    response = admin_client.post(
        reverse("admin:schedules_execution_changelist"),
        {"action": "cancel_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert ("success", "1 execution cancelled.") in messages_of(response)
    assert (
        "error",
        f"execution {second.pk} of workflow {workflow.pk}: the execution is already cancelled; "
        "there is nothing to cancel",
    ) in messages_of(response)
    first.refresh_from_db()
    assert first.status == "cancelled"


def test_the_execution_list_reads_a_bounded_number_of_queries(admin_client):
    workflow = services.workflow_create(
        name="nightly", definition=definition(), overlap_policy="allow"
    )
    for _ in range(30):
        services.execution_start(workflow=workflow)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:schedules_execution_changelist"))
    assert response.status_code == 200 and b"nightly" in response.content
    assert len(queries) < 15
    assert not [q for q in queries if '"data"' in q["sql"] and "schedules_execution" in q["sql"]]


def test_pausing_rules_asks_the_reason_then_resuming_plans_the_next_start(admin_client):
    workflow = services.workflow_create(
        name="nightly", definition={"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}
    )
    rule = services.workflow_schedule(
        workflow=workflow, schedule_type="rate", rate_every=1, rate_unit="hours"
    )
    changelist = reverse("admin:schedules_workflow_changelist")
    chosen = {"action": "pause_rules", "_selected_action": [workflow.pk]}
    page = admin_client.post(changelist, chosen)
    assert page.status_code == 200 and page.context["title"] == "Pause workflows' rules"
    rule.refresh_from_db()
    assert rule.status == "scheduled"  # nothing paused before the reason's page is sent
    response = admin_client.post(changelist, {**chosen, "apply": "Pause", "reason": "migration"})
    assert messages_of(response) == [("success", "1 workflow's rule paused.")]
    rule.refresh_from_db()
    assert (rule.status, rule.pause_reason) == ("paused", "paused in the admin by admin: migration")
    assert "(paused)" in admin_client.get(changelist).content.decode()
    response = admin_client.post(
        changelist, {"action": "resume_rules", "_selected_action": [workflow.pk]}
    )
    assert messages_of(response) == [("success", "1 workflow's rule resumed.")]
    rule.refresh_from_db()
    assert rule.status == "scheduled" and rule.steps.filter(state="scheduled").count() == 1
