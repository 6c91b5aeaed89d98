"""The admin for classrooms: the recording's start and stop, and the live pings between."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext

from .. import services
from ..forms import (
    ClassroomAddForm,
    ClassroomChangeForm,
    ShiftClassroomsForm,
)
from ..models import (
    Classroom,
    Run,
    Step,
)
from ..timelines import classroom_timeline
from .base import (
    FINAL_PLAN_STATES,
    PlanAdmin,
    zoned_time,
)
from .filters import (
    StartFilter,
)
from .inlines import (
    RunInline,
    StepInline,
)
from .pausing import PauseAdmin, pause_badge
from .timeline import TIMELINE_FIELDSET, TimelineAdmin

#: What the State section says about pausing.
STATE_HELP = (
    "Pause (the button above, or the list's action) holds the steps not started yet and "
    "disarms their timers; a step running finishes (a recording that started keeps "
    "recording). Resume drops the pings whose time passed, runs a start or a stop whose "
    "time passed now, and arms the rest at their times."
)


@admin.register(Classroom)
class ClassroomAdmin(PauseAdmin[Classroom], TimelineAdmin[Classroom], PlanAdmin[Classroom]):
    add_form = ClassroomAddForm
    change_form = ClassroomChangeForm
    list_display = (
        "id",
        "title",
        "status_badge",
        "last_lateness",
        "start_time",
        "end_time",
        "live_ping_interval",
        "engine",
        "recording_service_ref",
        "owner",
    )
    list_display_links = ("id", "title")
    list_filter = ("status", StartFilter, "precision")
    list_select_related = ("owner",)
    search_fields = ("title", "recording_service_ref")
    search_help_text = "Part of a classroom's title or recording reference, or a classroom id."
    sortable_by = ("id", "start_time")
    ordering = ("-start",)
    raw_id_fields = ("owner",)
    inlines = (StepInline, RunInline)
    actions = ("cancel_selected", "shift_selected", "pause_selected", "resume_selected")
    pause_names = ("classroom", "classrooms")
    add_fieldsets = (
        (None, {"fields": ("title", "recording_service_ref")}),
        ("When", {"fields": ("start", "end", "live_ping_interval", "time_zone", "precision")}),
    )
    fieldsets = (
        (None, {"fields": ("title", "recording_service_ref")}),
        ("When", {"fields": ("start", "end", "live_ping_interval", "time_zone", "precision")}),
        (
            "State",
            {
                "fields": (
                    "status",
                    ("paused_at", "pause_reason"),
                    "owner",
                    "created_at",
                    "updated_at",
                ),
                "description": STATE_HELP,
            },
        ),
        TIMELINE_FIELDSET,
    )
    fixed_fields = (
        "time_zone",
        "precision",
        "status",
        "owner",
        "created_at",
        "updated_at",
        "timeline",
        "paused_at",
        "pause_reason",
    )

    def pause(self, obj: Classroom, reason: str) -> Classroom:
        return services.classroom_pause(classroom=obj, reason=reason)

    def resume(self, obj: Classroom) -> Classroom:
        return services.classroom_resume(classroom=obj)

    @admin.display(description="status")
    def status_badge(self, classroom: Classroom) -> str:
        """The status as a badge; a paused classroom's reason on hover."""
        return pause_badge(classroom)

    @admin.display(description="start", ordering="start")
    def start_time(self, classroom: Classroom) -> str:
        """In the classroom's own zone, to the second (UTC on hover)."""
        return zoned_time(classroom.start, classroom.time_zone)

    @admin.display(description="end", ordering="end")
    def end_time(self, classroom: Classroom) -> str:
        return zoned_time(classroom.end, classroom.time_zone)

    def timeline_data(self, obj: Classroom) -> dict[str, Any]:
        return classroom_timeline(obj)

    def is_frozen(self, obj: Classroom) -> bool:
        return obj.status in FINAL_PLAN_STATES

    def changelist_queryset(self, queryset: QuerySet[Classroom]) -> QuerySet[Classroom]:
        latest_step = Step.objects.filter(classroom=OuterRef("pk")).order_by("-pk")
        latest_run = Run.objects.filter(classroom=OuterRef("pk")).order_by("-pk")
        return (
            super()
            .changelist_queryset(queryset)
            .annotate(
                step_engine=Subquery(latest_step.values("engine")[:1]),
                last_lateness=Subquery(latest_run.values("lateness")[:1]),
            )
        )

    @admin.action(description="Move selected classrooms", permissions=["change"])
    def shift_selected(
        self, request: HttpRequest, queryset: QuerySet[Classroom]
    ) -> HttpResponse | None:
        def apply(form: forms.Form) -> None:
            by = dt.timedelta(minutes=form.cleaned_data["minutes"])
            self.apply_service(
                request,
                queryset.select_related(None).only("pk", "title"),
                lambda classroom: services.classroom_shift(classroom=classroom, by=by),
                lambda n: (
                    ngettext("%(count)d classroom moved.", "%(count)d classrooms moved.", n)
                    % {"count": n}
                ),
            )

        return self.ask_then_apply(
            request,
            queryset,
            form_class=ShiftClassroomsForm,
            title="Move classrooms",
            submit_label="Move",
            apply=apply,
        )

    @admin.action(description="Cancel selected classrooms", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Classroom]) -> None:
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "title"),
            lambda classroom: services.classroom_cancel(classroom=classroom),
            lambda n: (
                ngettext("%(count)d classroom cancelled.", "%(count)d classrooms cancelled.", n)
                % {"count": n}
            ),
        )
