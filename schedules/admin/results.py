"""Steps and runs: results written by the services and the worker, read-only here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from .. import selectors
from ..models import (
    Run,
    Step,
)
from .base import (
    ReadOnlyAdmin,
    badge_column,
    change_link,
    format_lateness,
    owner_link,
    timer_link,
    uncertain_flag,
)
from .filters import (
    ActionFilter,
    DueFilter,
    EngineFilter,
    StartedFilter,
)
from .inlines import (
    RunInline,
)


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin[Step]):
    list_display = (
        "id",
        "action",
        "owner",
        "state_badge",
        "due_at",
        "engine",
        "expected_lateness",
        "version",
        "arm_state_badge",
        "timer",
        "attempts_display",
    )
    # No precision filter: a class with few steps would scan the whole table for a page
    # (no index serves it; the engine filter, which follows the class, has one).
    list_filter = ("state", DueFilter, EngineFilter, "arm_state", ActionFilter)
    search_fields = ("id",)
    search_text = False
    search_help_text = "A step id."
    sortable_by = ("id", "due_at")
    ordering = ("-due_at",)
    raw_id_fields = ("job", "classroom")
    changelist_defer = ("arm_error",)
    inlines = (RunInline,)
    fieldsets = (
        (None, {"fields": ("owner", "action", "sequence", "due_at", "precision", "state")}),
        (
            "Fence and attempts",
            {"fields": ("version", "attempts", "max_attempts", "queued_at", "lease_until")},
        ),
        (
            "Engine",
            {
                "fields": (
                    "engine",
                    "expected_lateness",
                    "timer",
                    "arm_state",
                    "armed_engine",
                    "armed_version",
                    "arm_error",
                    "arm_failures",
                )
            },
        ),
        ("Timestamps", {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = ("owner", "timer", "expected_lateness")

    @admin.display(description="job or classroom")
    def owner(self, step: Step) -> str:
        return owner_link(step)

    state_badge = badge_column("state", "state")

    arm_state_badge = badge_column("arm_state", "arm state")

    @admin.display(description="expected lateness")
    def expected_lateness(self, step: Step) -> str:
        return selectors.engine_expected_lateness(step.engine)

    @admin.display(description="timer (external ref)")
    def timer(self, step: Step) -> str:
        return timer_link(step)

    @admin.display(description="attempts")
    def attempts_display(self, step: Step) -> str:
        return f"{step.attempts} / {step.max_attempts}"


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin[Run]):
    list_display = (
        "id",
        "status_badge",
        "engine_lateness_display",
        "lateness_display",
        "started_at",
        "due_at",
        "action",
        "engine",
        "uncertain_display",
        "step_link",
        "owner",
        "attempt",
        "version",
        "worker",
    )
    list_filter = ("status", StartedFilter, ActionFilter, EngineFilter, "uncertain")
    search_fields = ("id",)
    search_text = False
    search_ids = ("pk", "step_id")
    change_list_template = "admin/schedules/run/change_list.html"
    search_help_text = "A run id or a step id."
    sortable_by = ("id", "started_at")
    ordering = ("-started_at",)
    raw_id_fields = ("step", "job", "classroom")
    changelist_defer = ("result", "error")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status",
                    "action",
                    "step_link",
                    "owner",
                    "version",
                    "attempt",
                    "uncertain",
                    "note",
                    "worker",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "due_at",
                    "started_at",
                    "finished_at",
                    "lateness_display",
                    "engine_lateness_display",
                )
            },
        ),
        ("Outcome", {"fields": ("result", "error")}),
    )
    readonly_fields = ("step_link", "owner", "lateness_display", "engine_lateness_display")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Above the list: what each engine really delivered over the last 24 hours."""
        context = {
            "lateness_by_engine": [
                {
                    "engine": row.engine,
                    "runs": row.runs,
                    "p50": format_lateness(row.p50),
                    "p95": format_lateness(row.p95),
                    "max": format_lateness(row.max),
                    "expected": row.expected,
                }
                for row in selectors.lateness_by_engine()
            ],
            **(extra_context or {}),
        }
        response: HttpResponse = super().changelist_view(request, extra_context=context)
        return response

    @admin.display(description="step")
    def step_link(self, run: Run) -> str:
        return change_link(Step, run.step_id, f"step {run.step_id}")

    status_badge = badge_column("status", "status")

    @admin.display(description="uncertain")
    def uncertain_display(self, run: Run) -> str:
        return uncertain_flag(run)

    @admin.display(description="job or classroom")
    def owner(self, run: Run) -> str:
        return owner_link(run)

    @admin.display(description="lateness")
    def lateness_display(self, run: Run) -> str:
        return format_lateness(run.lateness)

    @admin.display(description="engine's lateness")
    def engine_lateness_display(self, run: Run) -> str:
        """From the later of the due time and the moment the engine took the timer."""
        return format_lateness(run.engine_lateness)
