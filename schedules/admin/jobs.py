"""The admin for jobs: one-off, recurring and polling."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html_join
from django.utils.http import urlencode
from django.utils.translation import ngettext

from workers.actions import REGISTRY

from .. import selectors, services
from ..costs import format_usd, job_cost
from ..forms import (
    JobAddForm,
    JobChangeForm,
    RescheduleJobsForm,
    job_clone_initial,
    job_initial_from_query,
)
from ..models import (
    Job,
    PlanStatus,
    Run,
    Step,
)
from ..selectors import describe_schedule
from ..timelines import job_timeline
from .base import (
    FINAL_PLAN_STATES,
    PlanAdmin,
    zoned_time,
)
from .filters import (
    DueFilter,
    JobActionFilter,
)
from .inlines import (
    JobStepInline,
    RunInline,
)
from .pausing import PauseAdmin, pause_badge
from .timeline import TIMELINE_FIELDSET, TimelineAdmin

# The job form's script (schedules/static/schedules/job_form.js) shows a fieldset with a
# ``schedule-<type>`` class only for that schedule type, and one with ``action-polls`` only
# for an action that polls; it disables the fields of a hidden fieldset, so they are not
# sent. Without the script every fieldset shows, and the services refuse a field of another
# type as always.
POLL_FIELDSET = (
    "Polling (actions that poll, e.g. http_check)",
    {"fields": ("poll_interval", "poll_max_checks", "poll_timeout"), "classes": ("action-polls",)},
)
RECURRING = ("schedule-rate", "schedule-cron")
RATE_FIELDSET = ("Rate rule", {"fields": (("rate_every", "rate_unit"),), "classes": RECURRING[:1]})
CRON_FIELDSET = ("Cron rule", {"fields": ("cron",), "classes": RECURRING[1:]})
#: The query parameter of the add form that prefills it from a job (the "Clone" link).
CLONE_PARAM = "clone"
#: What the State section says about pausing.
STATE_HELP = (
    "Pause (the button above, or the list's action) holds the job's pending step and "
    "disarms its timer; an attempt already running finishes, and a recurring job plans "
    "nothing more. Resume arms only the next run: a one-off job past its due time runs "
    "now; a recurring job's occurrences missed meanwhile follow its missed policy."
)
STATE_FIELDSET: Any = (
    "State",
    {
        "fields": ("status", ("paused_at", "pause_reason"), "owner", "created_at", "updated_at"),
        "description": STATE_HELP,
    },
)


def _of_type(fieldsets: Any, schedule_type: str) -> Any:
    """The fieldsets of every schedule type, or of ``schedule_type``."""
    return tuple(
        (name, options)
        for name, options in fieldsets
        if not any(c.startswith("schedule-") for c in options.get("classes", ()))
        or f"schedule-{schedule_type}" in options["classes"]
    )


@admin.register(Job)
class JobAdmin(PauseAdmin[Job], TimelineAdmin[Job], PlanAdmin[Job]):
    add_form = JobAddForm
    change_form = JobChangeForm
    list_display = (
        "id",
        "name",
        "status_badge",
        "last_lateness",
        "due_time",
        "schedule",
        "action",
        "engine",
        "attempts",
        "owner",
    )
    list_display_links = ("id", "name")
    list_filter = ("status", "schedule_type", DueFilter, JobActionFilter, "precision")
    list_select_related = ("owner",)
    search_fields = ("name", "action")
    search_help_text = "Part of a job's name or action, or a job id."
    sortable_by = ("id", "due_time")
    ordering = ("-due_at",)
    raw_id_fields = ("owner",)
    changelist_defer = ("payload",)
    inlines = (JobStepInline, RunInline)
    actions = (
        "cancel_selected",
        "run_now",
        "reschedule_selected",
        "pause_selected",
        "resume_selected",
        "clone_selected",
    )
    pause_names = ("job", "jobs")
    add_fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        ("When", {"fields": ("schedule_type", "time_zone", "precision", "max_attempts")}),
        ("Due time (one-off jobs)", {"fields": ("due_at",), "classes": ("schedule-once",)}),
        RATE_FIELDSET,
        CRON_FIELDSET,
        (
            "Rule window (rate or cron jobs)",
            {"fields": ("starts_at", "ends_at", "max_runs"), "classes": RECURRING},
        ),
        (
            "Policies (rate or cron jobs)",
            {
                "fields": ("missed_policy", "overlap_policy", "pause_after_failures"),
                "classes": RECURRING,
            },
        ),
        POLL_FIELDSET,
    )
    fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        (
            "When",
            {
                "fields": (
                    "schedule_type",
                    "due_at",
                    "time_zone",
                    "precision",
                    "estimated_cost",
                    "max_attempts",
                )
            },
        ),
        STATE_FIELDSET,
    )
    recurring_fieldsets = (
        (None, {"fields": ("name", "action", "payload", "webhook_url")}),
        (
            "Rule",
            {"fields": ("schedule_type", "rule_description", "next_occurrences", "time_zone")},
        ),
        RATE_FIELDSET,
        CRON_FIELDSET,
        ("Rule window", {"fields": ("starts_at", "ends_at", "max_runs", "run_count")}),
        (
            "Policies",
            {
                "fields": (
                    "missed_policy",
                    "overlap_policy",
                    ("pause_after_failures", "consecutive_failures"),
                    "precision",
                    "estimated_cost",
                    "max_attempts",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "status",
                    ("paused_at", "pause_reason"),
                    "due_at",
                    "owner",
                    "created_at",
                    "updated_at",
                ),
                "description": STATE_HELP,
            },
        ),
    )
    fixed_fields = (
        "timeline",
        "action",
        "time_zone",
        "status",
        "owner",
        "created_at",
        "updated_at",
        "run_count",
        "rule_description",
        "next_occurrences",
        "estimated_cost",
        "paused_at",
        "pause_reason",
        "consecutive_failures",
    )

    def pause(self, obj: Job, reason: str) -> Job:
        return services.job_pause(job=obj, reason=reason)

    def resume(self, obj: Job) -> Job:
        return services.job_resume(job=obj)

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        if obj is None:
            return self.add_fieldsets
        fieldsets = self.recurring_fieldsets if obj.is_recurring else self.fieldsets
        if obj.is_recurring and self.is_frozen(obj):  # its type can no longer change
            fieldsets = _of_type(fieldsets, obj.schedule_type)
        if obj.action in REGISTRY and REGISTRY[obj.action].polls:
            fieldsets = (*fieldsets[:-1], POLL_FIELDSET, fieldsets[-1])
        return (*fieldsets, TIMELINE_FIELDSET)

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> tuple[str, ...]:
        readonly = super().get_readonly_fields(request, obj)
        if obj is None:
            return readonly
        # A recurring job's due time is its next occurrence, planned from the rule; a
        # one-off job stays one-off.
        return (*readonly, "due_at" if obj.is_recurring else "schedule_type")

    def timeline_data(self, obj: Job) -> dict[str, Any]:
        return job_timeline(obj)

    def is_frozen(self, obj: Job) -> bool:
        # The services edit a scheduled one-off job, and a recurring job until it ends.
        if obj.is_recurring:
            return obj.status in FINAL_PLAN_STATES
        return obj.status not in (PlanStatus.SCHEDULED, PlanStatus.PAUSED)

    @admin.display(description="status")
    def status_badge(self, job: Job) -> str:
        """The status as a badge; a paused job's reason on hover."""
        return pause_badge(job)

    @admin.display(description="due", ordering="due_at")
    def due_time(self, job: Job) -> str:
        """In the job's own zone, to the second (UTC on hover)."""
        return zoned_time(job.due_at, job.time_zone)

    @admin.display(description="schedule")
    def schedule(self, job: Job) -> str:
        """The rule in words (no query), or "once" for a one-off job."""
        return describe_schedule(job)

    @admin.display(description="rule")
    def rule_description(self, job: Job) -> str:
        return describe_schedule(job)

    @admin.display(description="estimated cost")
    def estimated_cost(self, job: Job) -> str:
        """The job's timers at its engine's list price (docs/aws.md, "Choosing an engine")."""
        cost = job_cost(job)
        if cost is None:
            return "its precision class has no engine configured here"
        unit = "check" if job.poll_interval else "run"
        each = f"{format_usd(cost.price)} per {unit} on {cost.engine}"
        if cost.per_month is None:
            return each
        return (
            f"{each}; about {cost.runs_per_month:,.0f} runs in the next 30 days: "
            f"{format_usd(cost.per_month)}"
        )

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

    def clone_url(self, job_id: int | str) -> str:
        """The add form prefilled from a job: what "Clone" opens (nothing is saved yet)."""
        add = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_add")
        return f"{add}?{urlencode({CLONE_PARAM: job_id})}"

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The "Clone" link of the object tools (templates/admin/schedules/job/change_form.html).
        context = {"clone_url": self.clone_url(unquote(object_id)), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Django's initial values from the GET parameters (the payload as JSON, times as
        ISO 8601), over a copy of the job named by ``?clone=<id>``."""
        initial = job_initial_from_query(super().get_changeform_initial_data(request))
        source = initial.pop(CLONE_PARAM, None)
        if source is None:
            return initial
        job = self.get_object(request, str(source))
        if job is None or not self.has_view_or_change_permission(request, job):
            self.message_user(
                request, f"No job with id {source!r} to copy: the form is empty.", messages.WARNING
            )
            return initial
        return {**job_clone_initial(job), **initial}

    @admin.action(description="Clone selected job", permissions=["add"])
    def clone_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        pks = list(queryset.values_list("pk", flat=True)[:2])
        if len(pks) != 1:
            self.message_user(
                request,
                "Select exactly one job to clone: its copy opens in the add form. Nothing was "
                "cloned.",
                messages.ERROR,
            )
            return None
        return HttpResponseRedirect(self.clone_url(pks[0]))
