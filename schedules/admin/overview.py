"""The overview page (``/admin/overview/``) and the JSON endpoints its charts read.

Staff only (the site's ``admin_view``), and only for users who may view runs. Times
are ISO 8601 in UTC, the charts' x values epoch milliseconds. Every
number comes from ``schedules.overview``: aggregated in SQL from indexes, so each
endpoint answers in milliseconds with a million runs and steps (docs/benchmarks.md).
The page itself renders the lists (problem runs, backlog, health) on the server and
leaves the charts to ``schedules/static/schedules/overview.js`` (Chart.js, vendored).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from .. import costs, overview
from ..models import RunStatus
from ..timelines import epoch_ms
from .base import format_lateness, owner_of

Endpoint = Callable[[HttpRequest, AdminSite], HttpResponse]


def _check(request: HttpRequest) -> None:
    if not request.user.has_perm("schedules.view_run"):
        raise PermissionDenied


def _window(
    request: HttpRequest, windows: dict[str, tuple[dt.timedelta, dt.timedelta]], default: str
) -> tuple[str, dt.timedelta, dt.timedelta] | JsonResponse:
    name = request.GET.get("window", default)
    if name not in windows:
        return JsonResponse(
            {"error": f"window must be one of {', '.join(windows)}, not {name!r}"}, status=400
        )
    window, bucket = windows[name]
    return name, window, bucket


def _change_url(model_name: str, pk: int | None) -> str | None:
    if pk is None:
        return None
    try:
        return reverse(f"admin:schedules_{model_name}_change", args=[pk])
    except NoReverseMatch:
        return None


# --- JSON endpoints ---------------------------------------------------------------------


def lateness(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """``?window=1h|24h``: per engine and minute, p50 and p99 of the engine's own
    lateness in seconds (nearest rank), the max and the number of runs."""
    _check(request)
    chosen = _window(request, overview.LATENESS_WINDOWS, "1h")
    if isinstance(chosen, JsonResponse):
        return chosen
    name, window, bucket = chosen
    now = timezone.now()
    series = overview.lateness_per_minute(window=window, bucket=bucket, now=now)
    return JsonResponse(
        {
            "window": name,
            "bucket_seconds": int(bucket.total_seconds()),
            "since": epoch_ms(now - window),
            "until": epoch_ms(now),
            "unit": "seconds",
            "engines": [
                {
                    "engine": row.engine,
                    "runs": row.runs,
                    "points": [
                        {
                            "t": epoch_ms(p.at),
                            "runs": p.runs,
                            "p50": p.p50,
                            "p99": p.p99,
                            "max": p.max,
                        }
                        for p in row.points
                    ],
                }
                for row in series
            ],
        }
    )


def upcoming(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """``?window=24h|7d``: steps still to run (scheduled or queued) due per bucket
    (10 minutes over 24 hours, an hour over 7 days)."""
    _check(request)
    chosen = _window(request, overview.UPCOMING_WINDOWS, "24h")
    if isinstance(chosen, JsonResponse):
        return chosen
    name, window, bucket = chosen
    now = timezone.now()
    counts = overview.steps_upcoming(window=window, bucket=bucket, now=now)
    return JsonResponse(
        {
            "window": name,
            "bucket_seconds": int(bucket.total_seconds()),
            "since": epoch_ms(now),
            "until": epoch_ms(now + window),
            "total": sum(count for _cut, count in counts),
            "buckets": [
                {
                    "t": epoch_ms(cut.at),
                    "start": epoch_ms(cut.start),
                    "end": epoch_ms(cut.end),
                    "steps": count,
                }
                for cut, count in counts
            ],
        }
    )


def runs(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """``?window=24h``: runs started per hour and status, with each status's total."""
    _check(request)
    chosen = _window(request, overview.RUNS_WINDOWS, "24h")
    if isinstance(chosen, JsonResponse):
        return chosen
    name, window, bucket = chosen
    now = timezone.now()
    cuts, series = overview.runs_by_status(window=window, bucket=bucket, now=now)
    changelist = reverse("admin:schedules_run_changelist")
    return JsonResponse(
        {
            "window": name,
            "bucket_seconds": int(bucket.total_seconds()),
            "since": epoch_ms(now - window),
            "until": epoch_ms(now),
            "buckets": [epoch_ms(cut.at) for cut in cuts],
            "total": sum(row.total for row in series),
            "statuses": [
                {
                    "status": row.status,
                    "label": row.label,
                    "total": row.total,
                    "counts": row.counts,
                    "url": f"{changelist}?status__exact={row.status}&started=past_day",
                }
                for row in series
            ],
        }
    )


def _problem_json(row: overview.ProblemRun) -> dict[str, Any]:
    model, pk = owner_of(row)
    owner = (str(model._meta.model_name), pk)
    return {
        "id": row.id,
        "url": _change_url("run", row.id),
        "status": row.status,
        "action": row.action,
        "engine": row.engine,
        "started_at": row.started_at,
        "owner": f"{owner[0]} {owner[1]}",
        "owner_url": _change_url(owner[0], owner[1]),
        "step_url": _change_url("step", row.step_id),
        "uncertain": row.uncertain,
        "error": row.error,
        "note": row.note,
    }


def _problems() -> dict[str, Any]:
    changelist = reverse("admin:schedules_run_changelist")
    return {
        "failures": [_problem_json(row) for row in overview.runs_failed_latest()],
        "failures_url": f"{changelist}?status__exact={RunStatus.FAILED}",
        "uncertain": [_problem_json(row) for row in overview.runs_uncertain_latest()],
        "uncertain_url": f"{changelist}?uncertain__exact=1",
    }


def problems(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """The newest failed or abandoned runs and the newest uncertain runs (20 each),
    with the admin links of each run, its step and its job, classroom or execution."""
    _check(request)
    return JsonResponse(_problems())


def _backlog(now: dt.datetime) -> dict[str, Any]:
    rows = overview.steps_backlog(now=now)
    return {
        "engines": [
            {
                "engine": row.engine,
                "due_unreleased": row.due_unreleased,
                "oldest_due_at": row.oldest_due_at,
                "oldest_wait_seconds": (
                    None
                    if row.oldest_due_at is None
                    else round((now - row.oldest_due_at).total_seconds(), 3)
                ),
                "released_unstarted": row.released_unstarted,
            }
            for row in rows
        ],
        "due_unreleased": sum(row.due_unreleased for row in rows),
        "released_unstarted": sum(row.released_unstarted for row in rows),
    }


def backlog(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """Per engine: steps due but not released (and how long the oldest has waited),
    and steps released to the queue but not started."""
    _check(request)
    return JsonResponse(_backlog(timezone.now()))


def _costs(now: dt.datetime) -> dict[str, Any]:
    loads = costs.engines_load(now=now)
    return {
        "period_days": costs.MONTH.days,
        "engines": [
            {
                "engine": load.engine,
                "price_per_timer": str(load.price),
                "price": costs.format_usd(load.price),
                "steps": load.steps,
                "recurring_runs": load.recurring_runs,
                "timers": round(load.timers, 1),
                "per_month": str(load.per_month),
                "cost": costs.format_usd(load.per_month),
            }
            for load in loads
        ],
        "total": costs.format_usd(sum((load.per_month for load in loads), Decimal(0))),
    }


def cost(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """Per engine: the timers of the next 30 days (steps scheduled within them and the
    projected runs of recurring jobs) at its list price per timer."""
    _check(request)
    return JsonResponse(_costs(timezone.now()))


def _health(now: dt.datetime) -> dict[str, Any]:
    roles, processes = overview.processes_health(now=now)
    return {
        "ok": all(role.ok for role in roles),
        "stale_after_seconds": settings.SCHEDULES_HEARTBEAT_STALE_AFTER,
        "roles": [
            {
                "role": role.role,
                "label": role.label,
                "ok": role.ok,
                "alive": role.alive,
                "newest_beat_at": role.newest_beat_at,
                "age_seconds": role.age_seconds,
                "message": role.message,
            }
            for role in roles
        ],
        "processes": [
            {
                "name": beat.name,
                "role": beat.role,
                "started_at": beat.started_at,
                "beat_at": beat.beat_at,
                "alive": beat.alive,
            }
            for beat in processes
        ],
    }


def health(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """The dispatcher's and the workers' health from their heartbeats (the rule of the
    health checks), and the processes that beat lately. The broker is not asked: the
    page answers as fast when it is down."""
    _check(request)
    return JsonResponse(_health(timezone.now()))


ENDPOINTS: dict[str, Endpoint] = {
    "lateness": lateness,
    "upcoming": upcoming,
    "runs": runs,
    "problems": problems,
    "backlog": backlog,
    "health": health,
    "cost": cost,
}


# --- The page ---------------------------------------------------------------------------


def overview_page(request: HttpRequest, site: AdminSite) -> HttpResponse:
    """The charts (drawn by overview.js from the endpoints), and the lists of problem
    runs, backlog and health rendered here."""
    _check(request)
    now = timezone.now()
    backlog_now = _backlog(now)
    problems_now = _problems()
    for row in backlog_now["engines"]:
        wait = row["oldest_wait_seconds"]
        row["oldest_wait"] = (
            "-" if wait is None else format_lateness(dt.timedelta(seconds=wait)).lstrip("+")
        )
    context = {
        **site.each_context(request),
        "title": "Overview",
        "time_zone": settings.TIME_ZONE,
        "urls": {name: reverse(f"admin:schedules_overview_{name}") for name in ENDPOINTS},
        "lateness_windows": [("1h", "Last hour"), ("24h", "Last 24 hours")],
        "upcoming_windows": [("24h", "Next 24 hours"), ("7d", "Next 7 days")],
        "problem_lists": [
            {
                "name": "failures",
                "title": f"Latest failures ({overview.PROBLEM_ROWS} newest)",
                "detail": "Error",
                "runs": problems_now["failures"],
                "url": problems_now["failures_url"],
                "none": "No failed or abandoned run.",
            },
            {
                "name": "uncertain",
                "title": f"Latest uncertain runs ({overview.PROBLEM_ROWS} newest)",
                "detail": "Note",
                "runs": problems_now["uncertain"],
                "url": problems_now["uncertain_url"],
                "none": "No uncertain run.",
            },
        ],
        "backlog": backlog_now,
        "health": _health(now),
        "costs": _costs(now),
    }
    return TemplateResponse(request, "admin/schedules/overview.html", context)
