"""Reads that are more than a lookup: the admin and the API call these."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import recurrence
from .engines import configured_engine_names, get_engine
from .models import Job, Run, RunStatus, ScheduleType


@dataclass(frozen=True)
class EngineLateness:
    """What an engine really delivered over a recent window (action start - due)."""

    engine: str
    runs: int
    p50: dt.timedelta | None
    p95: dt.timedelta | None
    max: dt.timedelta | None
    expected: str


def _percentile(ordered: list[dt.timedelta], fraction: float) -> dt.timedelta:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def engine_expected_lateness(engine: str) -> str:
    try:
        return get_engine(engine).expected_lateness
    except ImproperlyConfigured:
        return "engine not configured here"


def lateness_by_engine(
    *,
    window: dt.timedelta = dt.timedelta(hours=24),
    sample: int = 10_000,
    now: dt.datetime | None = None,
) -> list[EngineLateness]:
    """p50/p95/max of each engine's own lateness over its newest ``sample`` attempts in
    ``window``: from the later of the due time and the moment the engine took the timer,
    so a job saved after its due time does not count against the engine (runs recorded
    before that was kept count with their lateness from the due time).

    One indexed query per engine (Run: engine, started_at); skipped deliveries
    are not attempts and are left out.
    """
    since = (now or timezone.now()) - window
    engines = sorted({"local", *configured_engine_names()})
    report = []
    for engine in engines:
        values: list[dt.timedelta] = sorted(
            lateness
            for lateness in Run.objects.filter(
                engine=engine, started_at__gte=since, lateness__isnull=False
            )
            .exclude(status=RunStatus.SKIPPED)
            .order_by("-started_at")
            .values_list(Coalesce("engine_lateness", "lateness"), flat=True)[:sample]
            if lateness is not None
        )
        report.append(
            EngineLateness(
                engine=engine,
                runs=len(values),
                p50=_percentile(values, 0.50) if values else None,
                p95=_percentile(values, 0.95) if values else None,
                max=values[-1] if values else None,
                expected=engine_expected_lateness(engine),
            )
        )
    return report


class RuleFields(Protocol):
    """A job's rule fields: a ``Job``, or the worker's ``services.rows.JobPlan``."""

    schedule_type: str
    starts_at: dt.datetime | None
    rate_every: int | None
    rate_unit: str
    cron: str
    time_zone: str
    ends_at: dt.datetime | None
    max_runs: int | None


def rule_for(job: RuleFields) -> recurrence.Rule | None:
    """The job's recurrence rule, or None for a one-off job."""
    if job.schedule_type == ScheduleType.ONCE:
        return None
    assert job.starts_at is not None
    return recurrence.Rule(
        kind=job.schedule_type,
        starts_at=job.starts_at,
        every=job.rate_every or 0,
        unit=job.rate_unit,
        cron=job.cron,
        time_zone=job.time_zone,
        ends_at=job.ends_at,
        max_runs=job.max_runs,
    )


def describe_schedule(job: Job) -> str:
    """The job's rule in words ("Every 5 minutes, at most 3 runs"), or "once"."""
    rule = rule_for(job)
    return "once" if rule is None else recurrence.describe(rule)


def job_next_occurrences(
    job: Job, *, count: int = 5, now: dt.datetime | None = None
) -> list[dt.datetime]:
    """A recurring job's next ``count`` occurrences after now (UTC), within its bounds."""
    rule = rule_for(job)
    if rule is None:
        return []
    after = (now or timezone.now()) - dt.timedelta(microseconds=1)
    return list(recurrence.occurrences(rule, after, runs_so_far=job.run_count, limit=count))
