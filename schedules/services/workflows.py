"""Workflow definitions: saved checked, and versioned so that an execution keeps the
definition it started with (schedules/workflow_language.py is the language)."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from ..models import Workflow, WorkflowVersion
from ..validation import Errors
from ..workflow_language import definition_check

NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def _check_name(errors: Errors, name: Any) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        errors.add(
            "name",
            "1 to 80 letters, digits, hyphens or underscores (the name commands and the API use)",
        )
    elif Workflow.objects.filter(name=name).exists():
        errors.add("name", f"a workflow named {name!r} exists already")


def workflow_validate(*, definition: Any, name: str | None = None) -> None:
    """Raise one ``ValidationError`` naming every field (and, in the definition, every
    state and its field) that breaks a rule; ``name`` is checked when given (a new
    workflow's)."""
    errors = Errors()
    if name is not None:
        _check_name(errors, name)
    definition_check(errors, definition)
    errors.raise_if_any()


def workflow_create(
    *, name: str, definition: Any, description: str = "", owner: User | None = None
) -> Workflow:
    """A new workflow at version 1 (its first ``WorkflowVersion`` too)."""
    workflow_validate(name=name, definition=definition)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(
                name=name, definition=definition, description=description, owner=owner
            )
            WorkflowVersion.objects.create(workflow=workflow, version=1, definition=definition)
    except IntegrityError:
        # Another request created the name between the check and the insert.
        workflow_validate(name=name, definition=definition)
        raise
    return workflow


def workflow_update(
    *, workflow: Workflow, definition: Any | None = None, description: str | None = None
) -> Workflow:
    """Edit a workflow. A definition that differs from the current one is checked and
    saved as the next version; executions that run keep theirs. The name stays."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if definition is not None:
            workflow_validate(definition=definition)
        fields = ["updated_at"]
        if description is not None and description != workflow.description:
            workflow.description = description
            fields.append("description")
        if definition is not None and definition != workflow.definition:
            workflow.version += 1
            workflow.definition = definition
            fields += ["version", "definition"]
            WorkflowVersion.objects.create(
                workflow=workflow, version=workflow.version, definition=definition
            )
        if len(fields) > 1:
            workflow.save(update_fields=fields)
    return workflow
