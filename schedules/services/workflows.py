"""Workflow definitions: saved checked, and versioned so that an execution keeps the
definition it started with (schedules/workflow_language.py is the language)."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from typing_extensions import Unpack

from ..models import (
    Job,
    OverlapPolicy,
    PlanStatus,
    Precision,
    ScheduleType,
    Workflow,
    WorkflowVersion,
)
from ..validation import Errors, check_choice, check_precision
from ..workflow_language import definition_check
from .jobs import ScheduleFields, job_cancel, job_schedule
from .transactions import retrying

NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def _check_name(errors: Errors, name: Any) -> None:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        errors.add(
            "name",
            "1 to 80 letters, digits, hyphens or underscores (the name commands and the API use)",
        )
    elif Workflow.objects.filter(name=name).exists():
        errors.add("name", f"a workflow named {name!r} exists already")


def workflow_validate(
    *,
    definition: Any,
    name: str | None = None,
    precision: str = Precision.SECONDS,
    overlap_policy: str = OverlapPolicy.SKIP,
) -> None:
    """Raise one ``ValidationError`` naming every field (and, in the definition, every
    state and its field) that breaks a rule; ``name`` is checked when given (a new
    workflow's)."""
    errors = Errors()
    if name is not None:
        _check_name(errors, name)
    check_precision(errors, "precision", precision)
    check_choice(errors, "overlap_policy", overlap_policy, OverlapPolicy)
    definition_check(errors, definition)
    errors.raise_if_any()


def workflow_create(
    *,
    name: str,
    definition: Any,
    description: str = "",
    owner: User | None = None,
    precision: str = Precision.SECONDS,
    overlap_policy: str = OverlapPolicy.SKIP,
) -> Workflow:
    """A new workflow at version 1 (its first ``WorkflowVersion`` too)."""
    options = {"precision": precision, "overlap_policy": overlap_policy}
    workflow_validate(name=name, definition=definition, **options)
    try:
        with transaction.atomic():
            workflow = Workflow.objects.create(
                name=name, definition=definition, description=description, owner=owner, **options
            )
            WorkflowVersion.objects.create(workflow=workflow, version=1, definition=definition)
    except IntegrityError:
        # Another request created the name between the check and the insert.
        workflow_validate(name=name, definition=definition)
        raise
    return workflow


def workflow_update(
    *,
    workflow: Workflow,
    definition: Any | None = None,
    description: str | None = None,
    precision: str | None = None,
    overlap_policy: str | None = None,
) -> Workflow:
    """Edit a workflow. A definition that differs from the current one is checked and
    saved as the next version; executions that run keep theirs. The name stays. A new
    precision applies to the steps planned from now on."""
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        options = {
            "precision": precision or workflow.precision,
            "overlap_policy": overlap_policy or workflow.overlap_policy,
        }
        workflow_validate(
            definition=workflow.definition if definition is None else definition, **options
        )
        fields = ["updated_at"]
        if description is not None and description != workflow.description:
            workflow.description = description
            fields.append("description")
        for key, value in options.items():
            if value != getattr(workflow, key):
                setattr(workflow, key, value)
                fields.append(key)
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


@retrying
def workflow_schedule(
    *,
    workflow: Workflow,
    input: dict[str, Any] | None = None,
    time_zone: str = "UTC",
    **rule: Unpack[ScheduleFields],
) -> Job:
    """Start ``workflow`` by a rate or cron rule (with ``time_zone``, ``starts_at``,
    ``ends_at``, ``max_runs`` and ``missed_policy``, as a recurring job's): a recurring
    job runs ``workflow_start`` at each occurrence, so only the next start is armed, and
    each occurrence starts one execution (its step is the start key). A rule already
    set is replaced (cancelled; its count of runs starts again)."""
    errors = Errors()
    if rule.get("schedule_type") not in (ScheduleType.RATE, ScheduleType.CRON):
        errors.add("schedule_type", "must be rate or cron (a workflow's rule repeats)")
    for key in ("overlap_policy", "poll_interval", "poll_max_checks", "poll_timeout"):
        if key in rule:
            errors.add(key, "a workflow's rule has none (the workflow's overlap policy applies)")
    errors.raise_if_any()
    workflow = Workflow.objects.select_for_update(no_key=True).get(pk=workflow.pk)
    old = workflow.schedule
    # A start is over in an instant, and idempotent by its step: the workflow's own
    # overlap policy decides whether it starts alongside a running execution.
    fields: ScheduleFields = {**rule, "overlap_policy": OverlapPolicy.ALLOW}
    job = job_schedule(
        action="workflow_start",
        payload={"workflow": workflow.name, "input": input or {}},
        name=f"Start workflow {workflow.name}",
        time_zone=time_zone,
        owner=workflow.owner,
        precision=workflow.precision,
        **fields,
    )
    if old is not None and old.status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING):
        job_cancel(job=old)
    workflow.schedule = job
    workflow.save(update_fields=["schedule", "updated_at"])
    return job


@retrying
def workflow_unschedule(*, workflow: Workflow) -> Workflow:
    """Remove the workflow's rule: its next start is cancelled (executions go on)."""
    workflow = Workflow.objects.select_for_update(no_key=True).get(pk=workflow.pk)
    old = workflow.schedule
    if old is None:
        raise ValidationError({"schedule": "the workflow has no rule to remove"})
    if old.status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING):
        job_cancel(job=old)
    workflow.schedule = None
    workflow.save(update_fields=["schedule", "updated_at"])
    return workflow
