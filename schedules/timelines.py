"""Timelines: a classroom's steps, a job's occurrences and an execution's states on a time
axis, for the admin's change pages (drawn by schedules/static/schedules/timeline.js).

Reads only, each bounded: at most ``limit`` steps of one owner, and their runs by the
step index, so a classroom pinging every second for a day costs what its newest
``limit`` steps cost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from .models import Classroom, Execution, Job, Run, Step
from .selectors import job_next_occurrences

#: Most steps one timeline draws (the latest due when there are more).
TIMELINE_STEPS = 2000
#: Upcoming occurrences of a recurring job drawn after its steps.
TIMELINE_UPCOMING = 20


def epoch_ms(when: dt.datetime) -> int:
    """Epoch milliseconds: the charts' x axis."""
    return int(when.timestamp() * 1000)


def _lateness_ms(run: dict[str, Any] | None) -> float | None:
    """The engine's own lateness of the step's latest run (from the due time for runs
    recorded before the engine's was kept), in milliseconds."""
    if run is None:
        return None
    value = run["engine_lateness"] if run["engine_lateness"] is not None else run["lateness"]
    return None if value is None else round(value.total_seconds() * 1000, 1)


def _latest_runs(step_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Each step's latest run (by the step foreign key's index)."""
    latest: dict[int, dict[str, Any]] = {}
    rows = (
        Run.objects.filter(step_id__in=list(step_ids))
        .order_by("step_id", "-started_at")
        .values("step_id", "status", "started_at", "lateness", "engine_lateness")
    )
    for row in rows:
        latest.setdefault(row["step_id"], dict(row))
    return latest


def _step_points(
    steps: QuerySet[Step], row_of: Any, newest_first: tuple[str, ...]
) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``TIMELINE_STEPS`` of ``steps`` as points, oldest first. ``newest_first``
    is an order the owner's index serves (a recurring job's millionth occurrence costs
    what its first did)."""
    chosen = list(
        steps.order_by(*newest_first).only(
            "id", "due_at", "state", "action", "state_name", "sequence", "poll_number"
        )[: TIMELINE_STEPS + 1]
    )
    truncated = len(chosen) > TIMELINE_STEPS
    chosen = chosen[:TIMELINE_STEPS][::-1]
    runs = _latest_runs(step.pk for step in chosen)
    points = []
    for step in chosen:
        run = runs.get(step.pk)
        points.append(
            {
                "row": row_of(step),
                "x": epoch_ms(step.due_at),
                "state": step.state,
                "run_status": run["status"] if run else None,
                "started": epoch_ms(run["started_at"]) if run else None,
                "lateness_ms": _lateness_ms(run),
                "label": f"step {step.pk}",
                "url": reverse("admin:schedules_step_change", args=[step.pk]),
            }
        )
    return points, truncated


def _timeline(
    rows: list[str], points: list[dict[str, Any]], zone: str, truncated: bool
) -> dict[str, Any]:
    present = {point["row"] for point in points}
    return {
        "rows": [row for row in rows if row in present] + sorted(present.difference(rows)),
        "points": points,
        "now": epoch_ms(timezone.now()),
        "zone": zone,
        "truncated": truncated,
        "limit": TIMELINE_STEPS,
    }


def classroom_timeline(classroom: Classroom) -> dict[str, Any]:
    """The recording's start, its live pings and its stop, one row per action."""
    points, truncated = _step_points(
        Step.objects.filter(classroom=classroom), lambda step: step.action, ("-due_at", "-id")
    )
    return _timeline(
        ["start_recording", "live_ping", "stop_recording"],
        points,
        classroom.time_zone,
        truncated,
    )


def job_timeline(job: Job) -> dict[str, Any]:
    """A job's occurrences and checks (latest first when there are many), then the next
    ones its rule plans, not yet steps."""
    points, truncated = _step_points(
        Step.objects.filter(job=job),
        lambda step: "checks" if step.poll_number else "occurrences",
        ("-sequence", "-poll_number"),
    )
    planned = {point["x"] for point in points}
    for when in job_next_occurrences(job, count=TIMELINE_UPCOMING):
        if epoch_ms(when) in planned:
            continue  # the pending step already stands for it
        points.append(
            {
                "row": "next by the rule",
                "x": epoch_ms(when),
                "state": "upcoming",
                "run_status": None,
                "started": None,
                "lateness_ms": None,
                "label": "planned by the rule",
                "url": "",
            }
        )
    return _timeline(
        ["occurrences", "checks", "next by the rule"], points, job.time_zone, truncated
    )


def execution_timeline(execution: Execution) -> dict[str, Any]:
    """Each Task and Wait the execution entered, one row per state, in the order entered."""
    points, truncated = _step_points(
        Step.objects.filter(execution=execution),
        lambda step: step.state_name or step.action,
        ("-sequence",),
    )
    rows: list[str] = []
    for point in points:
        if point["row"] not in rows:
            rows.append(point["row"])
    return _timeline(rows, points, "UTC", truncated)
