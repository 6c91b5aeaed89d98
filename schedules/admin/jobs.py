"""The admin for jobs: one-off, recurring and polling."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html_join
from django.utils.translation import ngettext

from workers.actions import REGISTRY

from .. import selectors, services
from ..forms import (
    JobAddForm,
    JobChangeForm,
    RescheduleJobsForm,
)
from ..models import (
    Job,
    PlanStatus,
    Run,
    Step,
)
from ..selectors import describe_schedule
from .base import (
    FINAL_PLAN_STATES,
    PlanAdmin,
)
from .filters import (
    ActionFilter,
    DueFilter,
)
from .inlines import (
    JobStepInline,
    RunInline,
)

POLL_FIELDSET = (
    "Polling (actions that poll, e.g. http_check)",
    {"fields": ("poll_interval", "poll_max_checks", "poll_timeout")},
)


@admin.register(Job)
class JobAdmin(PlanAdmin[Job]):
    add_form = JobAddForm
    change_form = JobChangeForm
    list_display = (
        "id",
        "name",
        "action",
        "schedule",
        "status",
        "due_at",
        "engine",
        "last_lateness",
        "attempts",
        "owner",
    )
    list_display_links = ("id", "name")
    list_filter = ("status", "schedule_type", DueFilter, ActionFilter, "precision")
    list_select_related = ("owner",)
    search_fields = ("name", "action")
    search_help_text = "Part of a job's name or action, or a job id."
    sortable_by = ("id", "due_at")
    ordering = ("-due_at",)
    raw_id_fields = ("owner",)
    changelist_defer = ("payload",)
    inlines = (JobStepInline, RunInline)
    actions = ("cancel_selected", "run_now", "reschedule_selected")
    add_fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        ("When", {"fields": ("schedule_type", "due_at", "time_zone", "precision", "max_attempts")}),
        (
            "Recurrence (rate or cron jobs)",
            {"fields": ("rate_every", "rate_unit", "cron", "starts_at", "ends_at", "max_runs")},
        ),
        ("Policies (recurring jobs)", {"fields": ("missed_policy", "overlap_policy")}),
        POLL_FIELDSET,
    )
    fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        ("When", {"fields": ("schedule_type", "due_at", "time_zone", "precision", "max_attempts")}),
        ("State", {"fields": ("status", "owner", "created_at", "updated_at")}),
    )
    recurring_fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        (
            "Rule",
            {
                "fields": (
                    "schedule_type",
                    "rule_description",
                    "next_occurrences",
                    "rate_every",
                    "rate_unit",
                    "cron",
                    "time_zone",
                    "starts_at",
                    "ends_at",
                    "max_runs",
                    "run_count",
                )
            },
        ),
        ("Policies", {"fields": ("missed_policy", "overlap_policy", "precision", "max_attempts")}),
        ("State", {"fields": ("status", "due_at", "owner", "created_at", "updated_at")}),
    )
    fixed_fields = (
        "action",
        "time_zone",
        "status",
        "owner",
        "created_at",
        "updated_at",
        "run_count",
        "rule_description",
        "next_occurrences",
    )

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        if obj is None:
            return self.add_fieldsets
        fieldsets = self.recurring_fieldsets if obj.is_recurring else self.fieldsets
        if obj.action in REGISTRY and REGISTRY[obj.action].polls:
            fieldsets = (*fieldsets[:-1], POLL_FIELDSET, fieldsets[-1])
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> tuple[str, ...]:
        readonly = super().get_readonly_fields(request, obj)
        if obj is None:
            return readonly
        # A recurring job's due time is its next occurrence, planned from the rule; a
        # one-off job stays one-off.
        return (*readonly, "due_at" if obj.is_recurring else "schedule_type")

    def is_frozen(self, obj: Job) -> bool:
        # The services edit a scheduled one-off job, and a recurring job until it ends.
        if obj.is_recurring:
            return obj.status in FINAL_PLAN_STATES
        return obj.status != PlanStatus.SCHEDULED

    @admin.display(description="schedule")
    def schedule(self, job: Job) -> str:
        """The rule in words (no query), or "once" for a one-off job."""
        return describe_schedule(job)

    @admin.display(description="rule")
    def rule_description(self, job: Job) -> str:
        return describe_schedule(job)

    @admin.display(description="next occurrences")
    def next_occurrences(self, job: Job) -> str:
        """The next five occurrences from now, in the job's zone and in UTC."""
        times = selectors.job_next_occurrences(job, count=5)
        if not times:
            return "none: the rule has ended"
        zone = ZoneInfo(job.time_zone)
        return format_html_join(
            "",
            "<div>{} <span class='quiet'>({} UTC)</span></div>",
            (
                (
                    when.astimezone(zone).strftime("%a %Y-%m-%d %H:%M:%S %Z"),
                    when.astimezone(dt.UTC).strftime("%H:%M:%S"),
                )
                for when in times
            ),
        )

    def changelist_queryset(self, queryset: QuerySet[Job]) -> QuerySet[Job]:
        # Correlated subqueries, each one seek on an index that starts with the job: steps'
        # (job, sequence, poll_number), runs' (job, started_at). Run for the page's rows only
        # (the capped count reads keys only).
        latest_step = Step.objects.filter(job=OuterRef("pk")).order_by("-sequence", "-poll_number")
        latest_run = Run.objects.filter(job=OuterRef("pk")).order_by("-started_at")
        return (
            super()
            .changelist_queryset(queryset)
            .annotate(
                step_attempts=Subquery(latest_step.values("attempts")[:1]),
                step_engine=Subquery(latest_step.values("engine")[:1]),
                last_lateness=Subquery(latest_run.values("lateness")[:1]),
            )
        )

    @admin.display(description="attempts")
    def attempts(self, job: Job) -> str:
        used = getattr(job, "step_attempts", None)
        return f"{used or 0} / {job.max_attempts}"

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "name", "action"),
            lambda job: services.job_cancel(job=job),
            lambda n: (
                ngettext("%(count)d job cancelled.", "%(count)d jobs cancelled.", n) % {"count": n}
            ),
        )

    @admin.action(description="Reschedule selected jobs", permissions=["change"])
    def reschedule_selected(
        self, request: HttpRequest, queryset: QuerySet[Job]
    ) -> HttpResponse | None:
        def apply(form: forms.Form) -> None:
            due_at = form.cleaned_data["due_at"]
            self.apply_service(
                request,
                queryset.select_related(None).only("pk", "name", "action"),
                lambda job: services.job_reschedule(job=job, due_at=due_at),
                lambda n: (
                    ngettext("%(count)d job rescheduled.", "%(count)d jobs rescheduled.", n)
                    % {"count": n}
                ),
            )

        return self.ask_then_apply(
            request,
            queryset,
            form_class=RescheduleJobsForm,
            title="Reschedule jobs",
            submit_label="Reschedule",
            apply=apply,
        )

    @admin.action(description="Run selected jobs now", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "name", "action"),
            lambda job: services.job_run_now(job=job),
            lambda n: (
                ngettext("%(count)d job set to run now.", "%(count)d jobs set to run now.", n)
                % {"count": n}
            ),
        )
