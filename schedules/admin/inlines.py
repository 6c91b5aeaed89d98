"""Bounded, read-only inlines: the newest rows of a parent, never all of them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property

from ..models import (
    Run,
    Step,
)
from .base import (
    INLINE_ROWS,
    M,
    _InlineFormSet,
    _TabularInline,
    badge_column,
    change_link,
    format_lateness,
    page_time,
    uncertain_flag,
)


class LatestRowsFormSet(_InlineFormSet[Any, Any, Any]):
    """An inline formset over the first ``limit`` rows of its ordered queryset (the newest).

    A classroom with thousands of runs loads ``limit`` of them; the template
    links to the changelist filtered on the parent for the rest.
    """

    limit = INLINE_ROWS
    #: How the shown rows are chosen, for the note under the table.
    order_label = "newest"

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[: self.limit]
        return self._latest

    @cached_property
    def total(self) -> int:
        shown = len(self.get_queryset())
        if shown < self.limit:
            return shown  # all of them, no count needed
        return super().get_queryset().count()

    @property
    def has_more(self) -> bool:
        return self.total > self.limit

    @property
    def _opts(self) -> Any:
        assert self.model is not None  # an inline formset always has its model
        return self.model._meta

    @property
    def rows_label(self) -> str:
        return str(self._opts.verbose_name_plural)

    @property
    def changelist_url(self) -> str:
        opts = self._opts
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return f"{url}?{urlencode({f'{self.fk.name}__id__exact': self.instance.pk})}"


class ReadOnlyInline(_TabularInline[M, Any]):
    """Rows written only by the services: shown, linked, never edited here."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    formset = LatestRowsFormSet
    template = "admin/schedules/edit_inline/latest_tabular.html"
    limit = INLINE_ROWS
    order_label = "newest"
    defer: tuple[str, ...] = ()

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if issubclass(formset, LatestRowsFormSet):  # a class built for this request
            formset.limit = self.limit
            formset.order_label = self.order_label
        return formset

    def get_queryset(self, request: HttpRequest) -> QuerySet[M]:
        queryset = super().get_queryset(request)
        return queryset.defer(*self.defer) if self.defer else queryset

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class StepRows(ReadOnlyInline[Step]):
    """Steps shown under their job, classroom or execution."""

    model = Step

    state_badge = badge_column("state", "state")

    @admin.display(description="due at")
    def due_time(self, step: Step) -> str:
        return page_time(step.due_at)


class StepInline(StepRows):
    model = Step
    fields = (
        "action",
        "sequence",
        "due_time",
        "state_badge",
        "version",
        "engine",
        "arm_state",
        "attempts",
    )
    readonly_fields = fields
    ordering = ("-due_at", "-id")
    defer = ("arm_error", "external_ref")
    order_label = "latest due"
    verbose_name_plural = "steps (latest due first)"


class JobStepInline(StepRows):
    """A job's steps by occurrence and check, newest first: the order of the unique
    (job, sequence, poll_number) index, so a recurring job's millionth occurrence costs
    the same as its first."""

    fields = (
        "action",
        "sequence",
        "poll_number",
        "due_time",
        "state_badge",
        "version",
        "engine",
        "arm_state",
        "attempts",
    )
    readonly_fields = fields
    ordering = ("-sequence", "-poll_number")
    defer = StepInline.defer
    model = Step
    order_label = "latest"
    verbose_name_plural = "steps (latest occurrence first)"


class RunInline(ReadOnlyInline[Run]):
    model = Run
    fields = (
        "started_time",
        "status_badge",
        "lateness_display",
        "action",
        "step_link",
        "due_time",
        "attempt",
        "version",
        "uncertain_display",
        "note",
    )
    readonly_fields = fields
    ordering = ("-started_at", "-id")
    defer: tuple[str, ...] = ("result", "error")
    verbose_name_plural = "runs (newest first)"

    @admin.display(description="step")
    def step_link(self, run: Run) -> str:
        return change_link(Step, run.step_id, f"step {run.step_id}")

    @admin.display(description="lateness")
    def lateness_display(self, run: Run) -> str:
        return format_lateness(run.lateness)

    status_badge = badge_column("status", "status")

    @admin.display(description="started at")
    def started_time(self, run: Run) -> str:
        return page_time(run.started_at)

    @admin.display(description="due at")
    def due_time(self, run: Run) -> str:
        return page_time(run.due_at)

    @admin.display(description="uncertain")
    def uncertain_display(self, run: Run) -> str:
        return uncertain_flag(run)
