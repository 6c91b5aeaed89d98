"""A timeline on a change page: the object's steps on a time axis, from its own JSON URL."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from .base import M, _ModelAdmin

TIMELINE_FIELDSET: Any = ("Timeline", {"fields": ("timeline",)})


class TimelineAdmin(_ModelAdmin[M]):
    """Adds ``<id>/timeline/`` (JSON) and the ``timeline`` field that draws it."""

    @property
    def media(self) -> forms.Media:
        scripts = ("schedules/vendor/chart.umd.min.js", "schedules/timeline.js")
        return super().media + forms.Media(js=scripts)

    def timeline_data(self, obj: M) -> dict[str, Any]:
        raise NotImplementedError

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_timeline"
        view = self.admin_site.admin_view(self.timeline_view)
        return [path("<path:object_id>/timeline/", view, name=name), *super().get_urls()]

    def timeline_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id!r}.")
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return JsonResponse(self.timeline_data(obj))

    @admin.display(description="timeline")
    def timeline(self, obj: M) -> str:
        if obj.pk is None:
            return "-"
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_timeline", args=[obj.pk])
        return format_html(
            '<div class="timeline-box"><div class="timeline">'
            '<canvas data-chart="timeline" data-timeline-url="{}" role="img" '
            'aria-label="Steps on a time axis, coloured by state"></canvas></div>'
            '<p class="timeline-note help">Each step at its due time, coloured by state; '
            "point at one for its latest run's lateness, click it to open the step.</p></div>",
            url,
        )
