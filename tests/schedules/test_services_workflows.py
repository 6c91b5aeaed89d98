"""Workflow definitions are saved checked and versioned; a refused save writes nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from schedules import services
from schedules.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def definition(seconds: int = 1) -> dict[str, Any]:
    """A small valid definition (also used by the admin's and the API's tests)."""
    return {
        "StartAt": "Ping",
        "States": {
            "Ping": {"Type": "Task", "Action": "noop", "Payload": {}, "Next": "Pause"},
            "Pause": {"Type": "Wait", "Seconds": seconds, "Next": "Done"},
            "Done": {"Type": "Succeed"},
        },
    }


def test_create_saves_version_one():
    workflow = services.workflow_create(name="ping-twice", definition=definition())
    assert (workflow.version, workflow.definition) == (1, definition())
    (version,) = WorkflowVersion.objects.filter(workflow=workflow)
    assert (version.version, version.definition) == (1, definition())


def test_an_edit_of_the_definition_is_the_next_version_and_keeps_the_old_one():
    workflow = services.workflow_create(name="ping", definition=definition())
    services.workflow_update(workflow=workflow, definition=definition(seconds=5))
    services.workflow_update(workflow=workflow, description="same definition")
    workflow.refresh_from_db()
    assert workflow.version == 2 and workflow.description == "same definition"
    versions = dict(workflow.versions.values_list("version", "definition"))
    assert versions == {1: definition(), 2: definition(seconds=5)}
    # Saving the same definition again is no new version.
    services.workflow_update(workflow=workflow, definition=definition(seconds=5))
    assert Workflow.objects.get(pk=workflow.pk).version == 2


def test_a_refused_definition_names_state_and_field_and_writes_nothing():
    bad = definition()
    del bad["States"]["Pause"]["Next"]
    bad["States"]["Ping"]["Action"] = "nope"
    with pytest.raises(ValidationError) as caught:
        services.workflow_create(name="bad", definition=bad)
    messages = caught.value.message_dict["definition"]
    assert any(m.startswith("States.Pause: needs Next") for m in messages)
    assert any(m.startswith("States.Ping.Action: Unknown action 'nope'") for m in messages)
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()

    workflow = services.workflow_create(name="good", definition=definition())
    with pytest.raises(ValidationError):
        services.workflow_update(workflow=workflow, definition=bad)
    workflow.refresh_from_db()
    assert (workflow.version, workflow.definition) == (1, definition())
    assert workflow.versions.count() == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("has space", "1 to 80 letters, digits, hyphens or underscores"),
        ("", "1 to 80 letters, digits, hyphens or underscores"),
        ("x" * 81, "1 to 80 letters, digits, hyphens or underscores"),
        ("taken", "a workflow named 'taken' exists already"),
    ],
)
def test_names(name, message):
    services.workflow_create(name="taken", definition=definition())
    with pytest.raises(ValidationError) as caught:
        services.workflow_create(name=name, definition=definition())
    assert any(message in m for m in caught.value.message_dict["name"])
    assert Workflow.objects.count() == 1


def test_the_saved_definition_is_not_the_callers_object():
    mine = definition()
    workflow = services.workflow_create(name="mine", definition=mine)
    kept = copy.deepcopy(mine)
    mine["States"]["Pause"]["Seconds"] = 99  # the caller changes its own dict afterwards
    workflow.refresh_from_db()
    assert workflow.definition == kept
    assert workflow.versions.get().definition == kept
