"""Alerts sent: each delivery to one target, with its attempts (docs/alerts.md)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import ngettext

from ..models import (
    Execution,
    Job,
    NotificationDelivery,
    Run,
)
from ..notifications.services import notification_resend
from .base import (
    ReadOnlyAdmin,
    badge_column,
    change_link,
)
from .filters import (
    PAST_WINDOWS,
    TimeWindowFilter,
)


class CreatedFilter(TimeWindowFilter):
    title = "created"
    parameter_name = "created"
    field = "created_at"
    windows = PAST_WINDOWS


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin[NotificationDelivery]):
    """Each alert sent (or being sent) to one target, with its attempts (docs/alerts.md)."""

    list_display = (
        "id",
        "created_at",
        "event",
        "notifier",
        "target",
        "status_badge",
        "attempts",
        "response_status",
        "about",
        "error_line",
        "sent_at",
    )
    list_filter = ("status", "event", "notifier", CreatedFilter)
    list_select_related = ("job",)
    changelist_defer = ("payload", "job__payload")
    search_fields = ("id",)
    search_text = False
    search_ids = ("pk", "job_id", "run_id", "execution_id")
    search_help_text = "A delivery id, or the id of its job, run or execution."
    sortable_by = ("id", "created_at")
    ordering = ("-created_at",)
    raw_id_fields = ("job", "run", "execution")
    actions = ("send_again",)
    fieldsets = (
        (None, {"fields": ("event", "notifier", "target", "about", "status")}),
        (
            "Attempts",
            {
                "fields": (
                    "attempts",
                    "last_attempt_at",
                    "next_attempt_at",
                    "response_status",
                    "last_error",
                    "sent_at",
                    "created_at",
                )
            },
        ),
        ("Sent", {"fields": ("payload_json",)}),
    )
    readonly_fields = ("about", "payload_json")

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("schedules.change_notificationdelivery")

    @admin.display(description="about")
    def about(self, delivery: NotificationDelivery) -> str:
        """The job (by name), else the execution or run the alert is about."""
        if delivery.job is not None:
            return change_link(Job, delivery.job_id, str(delivery.job))
        execution = delivery.execution_id
        if execution is not None:
            return change_link(Execution, execution, f"execution {execution}")
        return change_link(Run, delivery.run_id, f"run {delivery.run_id}")

    status_badge = badge_column("status", "status")

    @admin.display(description="last error")
    def error_line(self, delivery: NotificationDelivery) -> str:
        lines = delivery.last_error.strip().splitlines()
        return lines[0][:200] if lines else ""

    @admin.display(description="payload")
    def payload_json(self, delivery: NotificationDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2))

    @admin.action(description="Send selected alerts again", permissions=["resend"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[NotificationDelivery]) -> None:
        self.apply_service(
            request,
            queryset.select_related(None).only("pk", "event", "notifier", "target", "status"),
            lambda delivery: notification_resend(delivery=delivery),
            lambda n: (
                ngettext("%(count)d alert queued again.", "%(count)d alerts queued again.", n)
                % {"count": n}
            ),
        )
