"""Recurrence rules: when a recurring job's occurrences fall, and what its rule says.

Two kinds, as EventBridge Scheduler and django-celery-beat offer:

* **rate**: every N seconds, minutes, hours or days, counted in elapsed time
  from the rule's start (``starts_at + k * interval``), so a daylight-saving
  change neither stretches nor shrinks an interval;
* **cron**: a 5-field expression read in the rule's time zone by ``cronsim``,
  which follows Debian cron at daylight-saving changes: a time skipped in
  spring runs once, right after the jump; a time repeated in autumn runs once,
  at its first pass; a rule with a wildcard hour (``0 * * * *``) runs once per
  real hour, both passes of the repeated hour included.

Bounds: no occurrence before ``starts_at`` or after ``ends_at``, and none past
``max_runs``. All times given and returned are aware; returned times are UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from django.conf import settings

from .validation import Errors, check_aware, check_time_zone

RATE, CRON = "rate", "cron"
UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


@dataclass(frozen=True)
class Rule:
    kind: str  # RATE or CRON
    starts_at: dt.datetime
    every: int = 0  # rate
    unit: str = ""  # rate: a key of UNITS
    cron: str = ""  # cron: 5 fields
    time_zone: str = "UTC"
    ends_at: dt.datetime | None = None
    max_runs: int | None = None

    @property
    def interval(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.every * UNITS[self.unit])

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


def validate(rule: Rule) -> None:
    """Raise a ValidationError naming each broken field and its rule."""
    errors = Errors()
    check_time_zone(errors, "time_zone", rule.time_zone)
    for name in ("starts_at", "ends_at"):
        if getattr(rule, name) is not None:
            check_aware(errors, name, getattr(rule, name))
    if rule.kind == RATE:
        minimum = float(settings.SCHEDULES_MIN_RATE_SECONDS)
        if rule.unit not in UNITS:
            errors.add("rate_unit", f"must be one of {', '.join(UNITS)}, not {rule.unit!r}")
        elif rule.every < 1:
            errors.add("rate_every", "must be a whole number of 1 or more")
        elif rule.every * UNITS[rule.unit] > settings.SCHEDULES_MAX_AHEAD:
            errors.add(
                "rate_every",
                f"every {rule.every} {rule.unit} is longer than SCHEDULES_MAX_AHEAD "
                f"({settings.SCHEDULES_MAX_AHEAD} s): the job could never run twice",
            )
        elif rule.interval.total_seconds() < minimum:
            errors.add(
                "rate_every",
                f"every {rule.every} {rule.unit} is faster than the minimum of {minimum:g} s "
                "(SCHEDULES_MIN_RATE_SECONDS)",
            )
    elif rule.kind == CRON:
        fields = rule.cron.split()
        if len(fields) != 5:
            errors.add(
                "cron",
                f"must have 5 fields (minute hour day-of-month month day-of-week), "
                f"not {len(fields)}",
            )
        else:
            try:
                CronSim(rule.cron, dt.datetime.now(dt.UTC))
            except CronSimError as exc:
                errors.add("cron", f"cannot be read: {exc} in {rule.cron!r}")
    else:
        errors.add("schedule_type", f"must be {RATE!r} or {CRON!r}, not {rule.kind!r}")
    bounds_aware = "starts_at" not in errors and "ends_at" not in errors
    if bounds_aware and rule.ends_at is not None and rule.ends_at <= rule.starts_at:
        errors.add("ends_at", "must be after starts_at")
    if rule.max_runs is not None and rule.max_runs < 1:
        errors.add("max_runs", "must be 1 or more (leave it empty for no limit)")
    errors.raise_if_any()
    if next_after(rule, rule.starts_at - dt.timedelta(microseconds=1), runs_so_far=0) is None:
        errors.add("ends_at", "the rule has no occurrence between start and end")
        errors.raise_if_any()


def _unbounded(rule: Rule, after: dt.datetime) -> Iterator[dt.datetime]:
    """Occurrences strictly after ``after``, ignoring ``ends_at`` and ``max_runs``."""
    start = rule.starts_at
    if rule.kind == RATE:
        step = rule.interval
        k = 0 if after < start else (after - start) // step + 1
        while True:
            yield (start + k * step).astimezone(dt.UTC)
            k += 1
    # cron: from just before the start, or from ``after``, in the rule's zone.
    origin = max(after, start - dt.timedelta(microseconds=1)).astimezone(rule.zone)
    # cronsim works in whole seconds and yields times after the one it is given.
    for when in CronSim(rule.cron, origin.replace(microsecond=0)):
        if when > origin:
            yield when.astimezone(dt.UTC)


def occurrences(
    rule: Rule, after: dt.datetime, *, runs_so_far: int = 0, limit: int | None = None
) -> Iterator[dt.datetime]:
    """The occurrences strictly after ``after``, within the rule's bounds."""
    left = None if rule.max_runs is None else rule.max_runs - runs_so_far
    for produced, when in enumerate(_unbounded(rule, after)):
        if rule.ends_at is not None and when > rule.ends_at:
            return
        if (left is not None and produced >= left) or (limit is not None and produced >= limit):
            return
        yield when


def next_after(rule: Rule, after: dt.datetime, *, runs_so_far: int = 0) -> dt.datetime | None:
    return next(occurrences(rule, after, runs_so_far=runs_so_far), None)


def count_due(rule: Rule, after: dt.datetime, until: dt.datetime, *, cap: int = 1000) -> int:
    """How many occurrences fall in (after, until], ignoring ``max_runs``; at most ``cap``."""
    count = 0
    for when in _unbounded(rule, after):
        if when > until or (rule.ends_at is not None and when > rule.ends_at) or count >= cap:
            break
        count += 1
    return count


def successor(
    rule: Rule,
    *,
    due_at: dt.datetime,
    taken_at: dt.datetime,
    now: dt.datetime,
    run_all_missed: bool,
    runs_so_far: int,
) -> dt.datetime | None:
    """The occurrence to plan after the one due at ``due_at`` (taken at ``taken_at``), now.

    Occurrences that were already due when it was taken were *missed*: with
    ``run_all_missed`` the first of them is next (each then runs in turn);
    otherwise they, and any that fell due since it was taken (an overlap), are
    passed over for the first occurrence after now.
    """
    following = next_after(rule, due_at, runs_so_far=runs_so_far)
    if following is None or (run_all_missed and following <= taken_at):
        return following
    return next_after(rule, max(now, due_at), runs_so_far=runs_so_far)


def describe(rule: Rule) -> str:
    """The rule in words, e.g. "Every 5 minutes" or "At 09:00 on Monday (Europe/Paris)"."""
    if rule.kind == RATE:
        unit = rule.unit if rule.every != 1 else rule.unit.rstrip("s")
        text = f"Every {rule.every} {unit}" if rule.every != 1 else f"Every {unit}"
    else:
        text = f"{CronSim(rule.cron, dt.datetime.now(rule.zone)).explain()} ({rule.time_zone})"
    bounds = []
    if rule.ends_at is not None:
        bounds.append(f"until {rule.ends_at.astimezone(rule.zone):%Y-%m-%d %H:%M:%S %Z}")
    if rule.max_runs is not None:
        bounds.append(f"at most {rule.max_runs} run{'s' if rule.max_runs != 1 else ''}")
    return ", ".join([text, *bounds])
