"""Changelist filters that need no query: fixed choices, never a DISTINCT over the table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from workers.actions import REGISTRY


class ActionFilter(admin.SimpleListFilter):
    """The registered actions (a DISTINCT over millions of rows is what this avoids)."""

    title = "action"
    parameter_name = "action__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(REGISTRY)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(action=value) if value else queryset


class JobActionFilter(ActionFilter):
    """The actions a job may run (any other name still works in the URL)."""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(REGISTRY) if REGISTRY[name].for_jobs]


class EngineFilter(admin.SimpleListFilter):
    """The engines named in SCHEDULES_ENGINES; any other name works in the URL."""

    title = "engine"
    parameter_name = "engine__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from ..engines import configured_engine_names

        return [(name, name) for name in configured_engine_names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(engine=value) if value else queryset


class TimeWindowFilter(admin.SimpleListFilter):
    """Fixed windows around now on an indexed date column: a range scan, never a DISTINCT.

    Django's ``date_hierarchy`` lists the years present with a DISTINCT over the
    whole table on every unfiltered changelist; these choices need no query.
    """

    field = ""
    #: (value, label, start offset, end offset) relative to now; None is open-ended.
    windows: tuple[tuple[str, str, dt.timedelta | None, dt.timedelta | None], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _start, _end in self.windows]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        now = timezone.now()
        for key, _label, start, end in self.windows:
            if key == value:
                if start is not None:
                    queryset = queryset.filter(**{f"{self.field}__gte": now + start})
                if end is not None:
                    queryset = queryset.filter(**{f"{self.field}__lt": now + end})
        return queryset


HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
DUE_WINDOWS = (
    ("overdue", "overdue (before now)", None, dt.timedelta(0)),
    ("next_hour", "in the next hour", dt.timedelta(0), HOUR),
    ("next_day", "in the next 24 hours", dt.timedelta(0), DAY),
    ("next_week", "in the next 7 days", dt.timedelta(0), 7 * DAY),
    ("later", "after the next 7 days", 7 * DAY, None),
    ("past_day", "in the last 24 hours", -DAY, dt.timedelta(0)),
    ("past_week", "in the last 7 days", -7 * DAY, dt.timedelta(0)),
)
PAST_WINDOWS = (
    ("past_hour", "in the last hour", -HOUR, None),
    ("past_day", "in the last 24 hours", -DAY, None),
    ("past_week", "in the last 7 days", -7 * DAY, None),
    ("older", "before the last 7 days", None, -7 * DAY),
)


class DueFilter(TimeWindowFilter):
    title = "due"
    parameter_name = "due"
    field = "due_at"
    windows = DUE_WINDOWS


class StartFilter(TimeWindowFilter):
    title = "start"
    parameter_name = "starts"
    field = "start"
    windows = DUE_WINDOWS


class StartedFilter(TimeWindowFilter):
    title = "started"
    parameter_name = "started"
    field = "started_at"
    windows = PAST_WINDOWS
