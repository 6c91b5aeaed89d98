"""Pause and resume in the admin: the list actions, the Pause and Resume buttons among a
change page's object tools, for jobs and classrooms. Pausing asks for an optional reason
first (the actions' intermediate page; ``<id>/pause/`` for one); resuming is a POST to
``<id>/resume/``. Both call the services (schedules/services/pauses.py).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods, require_POST

from ..models import ENDED_PLAN_STATES, PAUSE_REASON_MAX, PlanStatus
from ..services.transactions import Busy
from .base import BADGE_TONES, M, PlanAdmin

#: What a pause does and what a resume does, as the buttons' and the actions' help says.
PAUSE_HELP = (
    "Pause: the steps not started yet are held and their timers disarmed until it is "
    "resumed; a step already running finishes."
)
RESUME_HELP = (
    "Resume: only the next run is armed again, re-planned (a job's missed runs by its "
    "missed policy; a classroom's past pings dropped, a past start or stop run now)."
)


#: Room kept in pause_reason for "paused in the admin by <user>: " (usernames: 150 at most).
_WHO_MAX = len("paused in the admin by : ") + 150


def admin_reason(request: HttpRequest, given: str = "") -> str:
    """The reason a pause from the admin keeps: who paused it, and the reason given."""
    user = request.user
    name = user.get_username() if user.is_authenticated else "someone"
    who = f"paused in the admin by {name}"
    return f"{who}: {given}" if given else who


class PauseForm(forms.Form):
    """The optional reason asked before pausing from the admin."""

    reason = forms.CharField(
        required=False,
        strip=True,
        max_length=PAUSE_REASON_MAX - _WHO_MAX,
        widget=forms.TextInput(attrs={"size": 60, "autofocus": True}),
        help_text=(
            f"{PAUSE_HELP} Shown with the paused status, after who paused it; optional. "
            "A job that pauses itself after failures says so instead."
        ),
    )


def pause_badge(obj: Any) -> str:
    """The status as a badge; a paused plan's reason on hover."""
    tone = BADGE_TONES.get(obj.status, "neutral")
    reason = obj.pause_reason if obj.status == PlanStatus.PAUSED else ""
    if reason:
        return format_html(
            '<span class="badge badge-{}" title="{}">{} ⓘ</span>', tone, reason, obj.status
        )
    return format_html('<span class="badge badge-{}">{}</span>', tone, obj.status)


def _status(obj: Any) -> str:
    """A job's or a classroom's status."""
    return str(obj.status)


class PauseAdmin(PlanAdmin[M]):
    """Adds the actions ``pause_selected`` and ``resume_selected`` (list them in
    ``actions``) and the Pause or Resume button on the change page."""

    #: The singular and plural names in messages, e.g. ("job", "jobs").
    pause_names: tuple[str, str] = ("", "")

    def pause(self, obj: M, reason: str) -> Any:
        raise NotImplementedError

    def resume(self, obj: M) -> Any:
        raise NotImplementedError

    # --- The list actions -------------------------------------------------------------------

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[M], *, pausing: bool, reason: str = ""
    ) -> None:
        target = PlanStatus.PAUSED
        unchanged: list[Any] = []

        def service(obj: M) -> None:
            status = _status(obj)
            if (status == target) == pausing and status not in ENDED_PLAN_STATES:
                unchanged.append(obj.pk)
            if pausing:
                self.pause(obj, reason)
            else:
                self.resume(obj)

        one, many = self.pause_names
        verb = "paused" if pausing else "resumed"
        state = "already paused" if pausing else "not paused"

        def done(n: int) -> str:
            changed, same = n - len(unchanged), len(unchanged)
            if not changed:
                return ngettext(
                    f"%(count)d {one} was {state}.", f"%(count)d {many} were {state}.", same
                ) % {"count": same}
            text = ngettext(f"%(count)d {one} {verb}.", f"%(count)d {many} {verb}.", changed) % {
                "count": changed
            }
            if same:
                text = text[:-1] + ngettext(
                    f"; %(count)d was {state}.", f"; %(count)d were {state}.", same
                ) % {"count": same}
            return text

        self.apply_service(
            request, queryset.select_related(None).only("pk", "status"), service, done
        )

    @admin.action(description="Pause selected %(verbose_name_plural)s", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[M]) -> HttpResponse | None:
        """Hold each one's steps not started yet (their timers disarmed) until resumed,
        after asking for the reason (optional)."""
        return self.ask_then_apply(
            request,
            queryset,
            form_class=PauseForm,
            title=f"Pause {self.pause_names[1]}",
            submit_label="Pause",
            apply=lambda form: self._apply(
                request,
                queryset,
                pausing=True,
                reason=admin_reason(request, form.cleaned_data["reason"]),
            ),
        )

    @admin.action(description="Resume selected %(verbose_name_plural)s", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[M]) -> None:
        """Arm each one's next run again, re-planned by its missed policy."""
        self._apply(request, queryset, pausing=False)

    # --- The button on the change page --------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        urls = [
            path(
                "<path:object_id>/pause/",
                self.admin_site.admin_view(require_http_methods(["GET", "POST"])(self.pause_view)),
                name=f"{prefix}_pause",
            ),
            path(
                "<path:object_id>/resume/",
                self.admin_site.admin_view(require_POST(self.resume_view)),
                name=f"{prefix}_resume",
            ),
        ]
        return [*urls, *super().get_urls()]

    def pause_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the page asking for the reason; POST: pause with it."""
        obj = self._changeable(request, object_id)
        form = PauseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            reason = admin_reason(request, form.cleaned_data["reason"])
            return self._act(request, obj, lambda: self.pause(obj, reason), "paused")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Pause {obj}",
            "opts": self.opts,
            "original": obj,
            "form": form,
            "media": self.media + form.media,
            "change_url": self._change_url(obj),
        }
        return TemplateResponse(request, "admin/schedules/pause_form.html", context)

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self._changeable(request, object_id)
        return self._act(request, obj, lambda: self.resume(obj), "resumed")

    def _changeable(self, request: HttpRequest, object_id: str) -> M:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id!r}.")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        return obj

    def _change_url(self, obj: M) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])

    def _act(self, request: HttpRequest, obj: M, service: Any, verb: str) -> HttpResponse:
        """Run ``service``, say how it went and go back to the change page."""
        try:
            service()
        except ValidationError as exc:
            self.message_user(request, f"{obj}: {'; '.join(exc.messages)}", messages.ERROR)
        except Busy as exc:
            self.message_user(request, f"{obj}: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"{obj}: {verb}.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(obj))

    def pause_button(self, request: HttpRequest, object_id: str) -> dict[str, str] | None:
        """The Pause or Resume button for the change page (None: neither applies)."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_change_permission(request, obj):
            return None
        status = _status(obj)
        if status in ENDED_PLAN_STATES:
            return None
        verb = "resume" if status == PlanStatus.PAUSED else "pause"
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_{verb}"
        return {
            "url": reverse(name, args=[obj.pk]),
            "label": verb.capitalize(),
            "help": RESUME_HELP if verb == "resume" else PAUSE_HELP,
            "asks": "yes" if verb == "pause" else "",  # a link to the reason's page
        }

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {"pause_button": self.pause_button(request, object_id), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)
