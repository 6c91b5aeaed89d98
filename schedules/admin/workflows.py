"""Workflows, their versions and executions."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from .. import services
from ..forms import (
    StartExecutionForm,
    WorkflowAddForm,
    WorkflowChangeForm,
)
from ..models import (
    Execution,
    ExecutionStatus,
    Job,
    PlanStatus,
    Run,
    Step,
    Workflow,
    WorkflowVersion,
)
from ..selectors import describe_schedule
from ..timelines import execution_timeline
from ..workflow_drawing import definition_svg, execution_svg
from .base import (
    BigTableAdmin,
    PlanAdmin,
    ReadOnlyAdmin,
    badge_column,
    change_link,
)
from .inlines import (
    ReadOnlyInline,
    RunInline,
    StepRows,
)
from .pausing import PauseForm, admin_reason
from .timeline import TIMELINE_FIELDSET, TimelineAdmin


class WorkflowExecutionInline(ReadOnlyInline[Execution]):
    """The workflow's newest executions."""

    model = Execution
    fields = (
        "started_at",
        "status_badge",
        "state_name",
        "version_number",
        "error",
        "finished_at",
    )
    readonly_fields = fields
    ordering = ("-started_at", "-id")
    defer = ("input", "data", "history", "version__definition")
    verbose_name_plural = "executions (newest first)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("version")

    @admin.display(description="version")
    def version_number(self, execution: Execution) -> int:
        return execution.version.version

    status_badge = badge_column("status", "status")


class ExecutionStepInline(StepRows):
    """Each Task and Wait the execution entered, latest first."""

    model = Step
    fields = ("state_name", "action", "due_time", "state_badge", "version", "engine", "attempts")
    readonly_fields = fields
    ordering = ("-sequence",)
    defer = ("arm_error", "external_ref", "payload")
    order_label = "latest"
    verbose_name_plural = "steps (latest state first)"


class ExecutionRunInline(RunInline):
    """Each state's runs, with their lateness and errors."""

    fields = (
        "started_time",
        "state",
        "status_badge",
        "action",
        "step_link",
        "attempt",
        "lateness_display",
        "uncertain_display",
        "error_line",
        "note",
    )
    readonly_fields = fields
    defer: tuple[str, ...] = ("result",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        return (
            super()
            .get_queryset(request)
            .select_related("step")
            .defer("step__payload", "step__arm_error", "step__external_ref")
        )

    @admin.display(description="state")
    def state(self, run: Run) -> str:
        return run.step.state_name

    @admin.display(description="error")
    def error_line(self, run: Run) -> str:
        lines = run.error.strip().splitlines()
        return lines[0][:200] if lines else ""


class WorkflowVersionInline(ReadOnlyInline[WorkflowVersion]):
    """Every saved definition of the workflow, newest first."""

    model = WorkflowVersion
    fields = ("version", "created_at")
    readonly_fields = fields
    ordering = ("-version",)
    verbose_name_plural = "versions (newest first)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowVersion]:
        return super().get_queryset(request).select_related("workflow")


@admin.register(Workflow)
class WorkflowAdmin(PlanAdmin[Workflow]):
    """Definitions are saved through the services: checked, and versioned on change."""

    add_form = WorkflowAddForm
    change_form = WorkflowChangeForm
    search_fields = ("name",)
    search_help_text = "A workflow's name, or its id."
    ordering = ("name",)
    raw_id_fields = ("owner",)
    changelist_defer = ("definition",)
    inlines = (WorkflowExecutionInline, WorkflowVersionInline)
    list_display = ("name", "version", "description", "rule", "owner", "updated_at")
    list_select_related = ("owner", "schedule")
    actions = ("start_selected", "pause_rules", "resume_rules")
    add_fieldsets = (
        (None, {"fields": ("name", "description", "definition")}),
        ("Running", {"fields": ("precision", "overlap_policy")}),
    )
    fieldsets = (
        (None, {"fields": ("name", "version", "description", "drawing", "definition")}),
        ("Running", {"fields": ("precision", "overlap_policy", "rule")}),
        ("Owner and timestamps", {"fields": ("owner", "created_at", "updated_at")}),
    )
    fixed_fields = ("name", "version", "drawing", "rule", "owner", "created_at", "updated_at")

    def is_frozen(self, obj: Workflow) -> bool:
        return False  # a new version never changes an execution that runs

    @admin.display(description="rule")
    def rule(self, obj: Workflow) -> str:
        """The recurring job that starts it (set with the API, schedule_workflow or
        services.workflow_schedule)."""
        job = obj.schedule
        if job is None:
            return "-"
        state = (
            "" if job.status in (PlanStatus.SCHEDULED, PlanStatus.RUNNING) else f" ({job.status})"
        )
        return change_link(Job, job.pk, f"{describe_schedule(job)}{state}")

    @admin.action(description="Pause selected workflows' rules", permissions=["change"])
    def pause_rules(
        self, request: HttpRequest, queryset: QuerySet[Workflow]
    ) -> HttpResponse | None:
        """Pause each one's rule, after asking for the reason (optional): no execution
        starts until it is resumed (docs/admin.md)."""

        def apply(form: forms.Form) -> None:
            reason = admin_reason(request, form.cleaned_data["reason"])
            self.apply_service(
                request,
                queryset.select_related(None).only("pk", "name", "version", "schedule"),
                lambda workflow: services.workflow_pause(workflow=workflow, reason=reason),
                lambda n: (
                    ngettext(
                        "%(count)d workflow's rule paused.",
                        "%(count)d workflows' rules paused.",
                        n,
                    )
                    % {"count": n}
                ),
            )

        return self.ask_then_apply(
            request,
            queryset,
            form_class=PauseForm,
            title="Pause workflows' rules",
            submit_label="Pause",
            apply=apply,
        )

    @admin.action(description="Resume selected workflows' rules", permissions=["change"])
    def resume_rules(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        """Resume each one's paused rule: its next start is planned by its missed policy."""
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "name", "version", "schedule"),
            lambda workflow: services.workflow_resume(workflow=workflow),
            lambda n: (
                ngettext(
                    "%(count)d workflow's rule resumed.", "%(count)d workflows' rules resumed.", n
                )
                % {"count": n}
            ),
        )

    @admin.action(description="Start selected workflows", permissions=["change"])
    def start_selected(
        self, request: HttpRequest, queryset: QuerySet[Workflow]
    ) -> HttpResponse | None:
        def apply(form: forms.Form) -> None:
            data = form.cleaned_data
            user = request.user if isinstance(request.user, User) else None
            self.apply_service(
                request,
                queryset.select_related(None).only("pk", "name", "version"),
                lambda workflow: services.execution_start(
                    workflow=workflow,
                    input=data["input"] or {},
                    start_key=data["start_key"],
                    owner=user,
                ),
                lambda n: (
                    ngettext("%(count)d execution started.", "%(count)d executions started.", n)
                    % {"count": n}
                ),
            )

        return self.ask_then_apply(
            request,
            queryset,
            form_class=StartExecutionForm,
            title="Start workflows",
            submit_label="Start",
            apply=apply,
        )

    @admin.display(description="states")
    def drawing(self, obj: Workflow) -> str:
        """The saved version's states (a definition being edited is drawn once saved)."""
        return definition_svg(obj.definition)


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin[WorkflowVersion]):
    list_display = ("workflow", "version", "created_at")
    list_select_related = ("workflow",)
    list_filter = ("workflow",)
    search_fields = ("workflow__name",)
    ordering = ("workflow", "-version")
    fields = ("workflow", "version", "drawing", "definition", "created_at")
    readonly_fields = fields

    @admin.display(description="states")
    def drawing(self, obj: WorkflowVersion) -> str:
        return definition_svg(obj.definition)


@admin.register(Execution)
class ExecutionAdmin(TimelineAdmin[Execution], BigTableAdmin[Execution]):
    """Executions are written by the services and the worker; shown, and cancelled here."""

    list_display = (
        "id",
        "workflow",
        "version_number",
        "status_badge",
        "state_name",
        "started_at",
        "finished_at",
        "error",
    )
    list_display_links = ("id",)
    list_filter = ("status", "workflow")
    list_select_related = ("workflow", "version")
    changelist_defer = ("input", "data", "history", "version__definition", "workflow__definition")
    search_fields = ("workflow__name", "start_key")
    search_help_text = "A workflow's name, a start key, or an execution's id."
    ordering = ("-started_at",)
    actions = ("cancel_selected",)
    inlines = (ExecutionStepInline, ExecutionRunInline)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "workflow",
                    "version_number",
                    "status",
                    "state_name",
                    "error",
                    "cause",
                    "drawing",
                )
            },
        ),
        ("States entered", {"fields": ("history_table",)}),
        TIMELINE_FIELDSET,
        ("Data", {"fields": ("input_json", "data_json")}),
        (
            "Start",
            {"fields": ("start_key", "started_by", "owner", "started_at", "finished_at")},
        ),
    )
    readonly_fields = (
        "workflow",
        "version_number",
        "status",
        "state_name",
        "error",
        "cause",
        "drawing",
        "history_table",
        "timeline",
        "input_json",
        "data_json",
        "start_key",
        "started_by",
        "owner",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def timeline_data(self, obj: Execution) -> dict[str, Any]:
        return execution_timeline(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("workflow", "version")

    @admin.display(description="version")
    def version_number(self, execution: Execution) -> int:
        return execution.version.version

    status_badge = badge_column("status", "status")

    @admin.display(description="states")
    def drawing(self, execution: Execution) -> str:
        """The version it runs, with the states it entered and the arrows it took."""
        current = execution.state_name if execution.status == ExecutionStatus.RUNNING else ""
        return execution_svg(execution.version.definition, execution.history, current)

    @admin.display(description="history")
    def history_table(self, execution: Execution) -> str:
        dropped = execution.transitions - len(execution.history)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    n,
                    entry["at"][:23].replace("T", " "),
                    entry["type"],
                    entry["state"],
                    f"{entry['from']} ({entry['via']})" if entry["from"] else entry["via"],
                )
                for n, entry in enumerate(execution.history, start=dropped + 1)
            ),
        )
        note = f"The first {dropped} are not kept." if dropped else ""
        return format_html(
            "<table><thead><tr><th>#</th><th>entered (UTC)</th><th>type</th><th>state</th>"
            "<th>from (by)</th></tr></thead><tbody>{}</tbody></table>{}",
            rows,
            note,
        )

    @admin.display(description="input")
    def input_json(self, execution: Execution) -> str:
        return format_html("<pre>{}</pre>", json.dumps(execution.input, indent=2))

    @admin.display(description="data")
    def data_json(self, execution: Execution) -> str:
        return format_html("<pre>{}</pre>", json.dumps(execution.data, indent=2)[:100_000])

    @admin.action(description="Cancel selected executions", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "workflow_id"),
            lambda execution: services.execution_cancel(execution=execution),
            lambda n: (
                ngettext("%(count)d execution cancelled.", "%(count)d executions cancelled.", n)
                % {"count": n}
            ),
        )
