"""What an alert says: the webhook's JSON body, and the facts a mail lists.

Ids, states, times and the first line of an error; never a job's payload or a run's
result (they may hold personal data or secrets). Times are ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from ..models import Execution, Job, NotificationEvent, Run, RunStatus, Workflow

#: Longest error line an alert carries.
ERROR_CHARS = 500


def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def first_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:ERROR_CHARS] if lines else ""


def admin_url(model_name: str, pk: int | None) -> str | None:
    """The object's admin page: a path, absolute when SCHEDULES_NOTIFY_BASE_URL is set."""
    if pk is None:
        return None
    try:
        path = reverse(f"admin:schedules_{model_name}_change", args=[pk])
    except NoReverseMatch:
        return None
    base: str = settings.SCHEDULES_NOTIFY_BASE_URL
    return f"{base.rstrip('/')}{path}" if base else path


def job_facts(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "name": job.name,
        "action": job.action,
        "status": job.status,
        "schedule_type": job.schedule_type,
        "max_attempts": job.max_attempts,
        "admin_url": admin_url("job", job.pk),
    }


def run_facts(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "step_id": run.step_id,
        "action": run.action,
        "status": run.status,
        "attempt": run.attempt,
        "version": run.version,
        "engine": run.engine,
        "due_at": iso(run.due_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "lateness_seconds": run.lateness.total_seconds() if run.lateness is not None else None,
        "uncertain": run.uncertain,
        "error": first_line(run.error),
        "note": run.note,
        "admin_url": admin_url("run", run.pk),
    }


def execution_facts(execution: Execution, workflow_name: str) -> dict[str, Any]:
    return {
        "id": execution.pk,
        "workflow_id": execution.workflow_id,
        "workflow": workflow_name,
        "status": execution.status,
        "state_name": execution.state_name,
        "error": first_line(execution.error),
        "cause": first_line(execution.cause),
        "started_at": iso(execution.started_at),
        "finished_at": iso(execution.finished_at),
        "started_by_job_id": execution.started_by_id,
        "admin_url": admin_url("execution", execution.pk),
    }


def _owner(run: Run, job: Job | None) -> str:
    if job is not None:
        return f"job {job.pk} ({job.name or job.action})"
    if run.job_id:
        return f"job {run.job_id}"
    if run.execution_id:
        return f"execution {run.execution_id}"
    return f"classroom {run.classroom_id}"


def run_summary(event: str, run: Run, job: Job | None) -> str:
    owner = _owner(run, job)
    error = first_line(run.error)
    if event == NotificationEvent.JOB_FAILED:
        return f"{owner[0].upper()}{owner[1:]} failed" + (f": {error}" if error else "")
    if event == NotificationEvent.RUN_UNCERTAIN:
        return (
            f"Run {run.pk} of {owner} is uncertain: an attempt was lost mid-run, so "
            f"{run.action} may have had its effect twice"
        )
    outcome = dict(RunStatus.choices).get(run.status, run.status).lower()
    return f"Run {run.pk} of {owner} ({run.action}): {outcome}" + (f": {error}" if error else "")


def run_payload(event: str, run: Run, job: Job | None) -> dict[str, Any]:
    """An event about a run (run_finished, job_failed, run_uncertain)."""
    body: dict[str, Any] = {
        "event": event,
        "occurred_at": iso(timezone.now()),
        "summary": run_summary(event, run, job),
        "admin_url": admin_url("job", job.pk) if job is not None else admin_url("run", run.pk),
        "run": run_facts(run),
    }
    if job is not None:
        body["job"] = job_facts(job)
    if run.execution_id:
        body["execution"] = {
            "id": run.execution_id,
            "admin_url": admin_url("execution", run.execution_id),
        }
    if run.classroom_id:
        body["classroom"] = {
            "id": run.classroom_id,
            "admin_url": admin_url("classroom", run.classroom_id),
        }
    return body


def execution_payload(event: str, execution: Execution) -> dict[str, Any]:
    """An event about a workflow execution (execution_failed)."""
    name = (
        Workflow.objects.filter(pk=execution.workflow_id).values_list("name", flat=True).first()
        or f"#{execution.workflow_id}"
    )
    error = first_line(execution.error)
    where = f" in state {execution.state_name}" if execution.state_name else ""
    return {
        "event": event,
        "occurred_at": iso(timezone.now()),
        "summary": f"Execution {execution.pk} of workflow {name} failed{where}"
        + (f": {error}" if error else ""),
        "admin_url": admin_url("execution", execution.pk),
        "execution": execution_facts(execution, name),
    }
