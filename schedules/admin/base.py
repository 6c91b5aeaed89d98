"""The pieces every admin here shares: display helpers, changelists for tables of
millions of rows, and the base admins for plans and results."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers, widgets
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.paginator import Paginator
from django.db import models, router, transaction
from django.db.models import Q, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from .. import services
from ..engines import get_engine
from ..forms import (
    ServiceModelForm,
)
from ..models import (
    Classroom,
    Execution,
    Job,
    PlanStatus,
    Run,
    Step,
)
from ..services.transactions import Busy, run_retrying

M = TypeVar("M", bound=models.Model)

#: Rows an inline shows (the newest); the rest are one click away in the changelist.
INLINE_ROWS = 20
#: Per-object errors an action lists one by one before summing up the rest.
ACTION_ERRORS_SHOWN = 10
#: Most objects one action request handles (each is a service call and a transaction).
ACTION_MAX_OBJECTS = 1000
#: Plans in these states cannot change any more.
FINAL_PLAN_STATES = (PlanStatus.SUCCEEDED, PlanStatus.FAILED, PlanStatus.CANCELLED)

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin
    _TabularInline = admin.TabularInline
    _InlineFormSet = BaseInlineFormSet
else:
    # django-stubs makes these generic; Django itself does not subscript them.
    class _Subscriptable:
        def __class_getitem__(cls, item: Any) -> Any:
            return cls

    class _ModelAdmin(_Subscriptable, admin.ModelAdmin):
        pass

    class _TabularInline(_Subscriptable, admin.TabularInline):
        pass

    class _InlineFormSet(_Subscriptable, BaseInlineFormSet):
        pass


def format_lateness(value: dt.timedelta | None) -> str:
    """Start minus due time, signed, in the unit that reads best: ``+3.2 ms``, ``+12 ms``,
    ``-1.500 s``, ``+2 min 05 s``, ``+1 h 03 min``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 0.01:
        return f"{sign}{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.3f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    return f"{sign}{minutes} min {secs:02d} s"


#: The colour of a status's badge (schedules/static/schedules/admin.css), by its value.
BADGE_TONES = {
    "succeeded": "ok",
    "sent": "ok",
    "armed": "ok",
    "failed": "bad",
    "abandoned": "bad",
    "error": "bad",
    "retrying": "warn",
    "not_done": "warn",
    "paused": "warn",
    "running": "active",
    "queued": "active",
    "sending": "active",
}


def badge(value: str, label: str | None = None) -> str:
    """A status as a coloured badge (grey for states that are neither done nor wrong)."""
    tone = BADGE_TONES.get(value, "neutral")
    return format_html('<span class="badge badge-{}">{}</span>', tone, label or value)


def badge_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """A list or read-only column showing the choices ``field`` as a badge, labelled with
    its value (what filters and the API use): ``status_badge = badge_column("status",
    "status")`` on an admin or inline."""

    @admin.display(description=description)
    def column(model_admin: Any, obj: Any) -> str:
        return badge(getattr(obj, field))

    return column


def uncertain_flag(run: Any) -> str:
    """A warning when the run may have acted twice; nothing otherwise."""
    if not run.uncertain:
        return ""
    return format_html(
        '<span class="badge badge-warn" title="{}">⚠ uncertain</span>',
        "A worker was lost while this action ran: it may have acted, and acted again.",
    )


def zone_named(name: str | None) -> zoneinfo.ZoneInfo | None:
    """The IANA zone ``name``, or None for an empty or unknown name."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def zoned_time(value: dt.datetime | None, zone_name: str) -> str:
    """A time to the second in the object's own zone, with the zone; UTC on hover."""
    if value is None:
        return "-"
    local = value.astimezone(zone_named(zone_name) or dt.UTC)
    utc = value.astimezone(dt.UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(),
        date_format(utc, "Y-m-d H:i:s"),
        date_format(local, "DATETIME_FORMAT"),
    )


def page_time(value: dt.datetime | None) -> str:
    """A time in the zone the page is shown in (a plan's own on its page), UTC on hover."""
    return zoned_time(value, timezone.get_current_timezone_name())


class ZonedSplitDateTime(widgets.AdminSplitDateTime):
    """The admin's date and time inputs, with the zone they are read in and, for a saved
    value, the same moment in UTC."""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        html = super().render(name, value, attrs, renderer)
        zone = timezone.get_current_timezone_name()
        utc = ""
        if isinstance(value, dt.datetime) and timezone.is_aware(value) and zone != "UTC":
            utc = date_format(value.astimezone(dt.UTC), "Y-m-d H:i:s") + " UTC"
        return format_html(
            '{}<p class="zone-note help">In <strong class="zone-name">{}</strong>{}</p>',
            html,
            zone,
            format_html(' <span class="zone-utc">({})</span>', utc) if utc else "",
        )


def change_link(model: type[models.Model], pk: int | None, label: str) -> str:
    if pk is None:
        return "-"
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, label)


def owner_of(obj: Any) -> tuple[type[models.Model], int | None]:
    """The model and id of the job, execution or classroom a step or run (or a row with
    their ``job_id``, ``execution_id`` and ``classroom_id``) belongs to."""
    if obj.job_id is not None:
        return Job, obj.job_id
    if obj.execution_id is not None:
        return Execution, obj.execution_id
    return Classroom, obj.classroom_id


def owner_link(obj: Step | Run) -> str:
    """The job, classroom or execution a step or run belongs to, from the ids alone."""
    model, pk = owner_of(obj)
    return change_link(model, pk, f"{model._meta.model_name} {pk}")


def timer_link(step: Step) -> str:
    """The engine's reference for the timer, linked to its console when the engine has one."""
    try:
        url = get_engine(step.engine).console_url(services.timer_for(step))
    except ImproperlyConfigured:  # an engine no longer configured: show the bare reference
        url = ""
    if url:
        return format_html(
            '<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>',
            url,
            step.external_ref or "console",
        )
    return step.external_ref


def _int_term(search_term: str) -> int | None:
    term = search_term.strip().removeprefix("#")
    if term.isascii() and term.isdigit() and int(term) < 2**63:
        return int(term)
    return None


class CappedCountPaginator(Paginator):  # type: ignore[type-arg]  # generic in the stubs only
    """Counts at most ``cap + 1`` rows, so a changelist never counts a million-row table.

    Past the cap the page links stop at the cap and the total reads "more than
    <cap>"; filters narrow the list to what a person can page through.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        object_list: Any = self.object_list
        if isinstance(object_list, QuerySet):
            # Only the keys: the count must not compute the columns' annotations.
            return int(object_list.values("pk")[: self.cap + 1].count())
        return len(object_list)

    @property
    def capped(self) -> bool:
        return self.count > self.cap


class BigTableChangeList(ChangeList):
    def get_queryset(
        self, request: HttpRequest, exclude_parameters: list[str | None] | None = None
    ) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        if isinstance(self.model_admin, BigTableAdmin):
            queryset = self.model_admin.changelist_queryset(queryset)
        return queryset


class BigTableAdmin(_ModelAdmin[M]):
    """Changelist settings for tables of millions of rows."""

    class Media:
        css = {"all": ("schedules/admin.css",)}

    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
    #: Facet counts run a COUNT per choice over the whole filtered table: never offered.
    show_facets = admin.ShowFacets.NEVER
    #: Big columns no changelist column reads.
    changelist_defer: tuple[str, ...] = ()
    #: Whether the search box also matches ``search_fields`` (a number always matches ids).
    search_text = True
    #: Fields a number in the search box matches exactly (indexed: primary and foreign keys).
    search_ids: tuple[str, ...] = ("pk",)

    paginator = CappedCountPaginator

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BigTableChangeList

    def changelist_queryset(self, queryset: QuerySet[M]) -> QuerySet[M]:
        return queryset.defer(*self.changelist_defer) if self.changelist_defer else queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[M], search_term: str
    ) -> tuple[QuerySet[M], bool]:
        if not search_term.strip():
            return queryset, False
        if self.search_text:
            results, may_have_duplicates = super().get_search_results(
                request, queryset, search_term
            )
        else:
            results, may_have_duplicates = queryset.none(), False
        number = _int_term(search_term)
        if number is not None:
            by_id = Q.create([(name, number) for name in self.search_ids], connector=Q.OR)
            results = results | queryset.filter(by_id)
        return results, may_have_duplicates

    def apply_service(
        self,
        request: HttpRequest,
        queryset: QuerySet[M],
        service: Callable[[M], object],
        done: Callable[[int], str],
    ) -> None:
        """Call ``service`` per object; report the count done and each refusal."""
        pks = list(queryset.values_list("pk", flat=True)[: ACTION_MAX_OBJECTS + 1])
        if len(pks) > ACTION_MAX_OBJECTS:
            self.message_user(
                request,
                f"Select at most {ACTION_MAX_OBJECTS} at once; nothing was done.",
                messages.ERROR,
            )
            return
        count = 0
        refused: list[str] = []
        for obj in queryset.filter(pk__in=pks):
            try:
                service(obj)
            except ValidationError as exc:
                refused.append(f"{obj}: {'; '.join(exc.messages)}")
            except Busy as exc:
                refused.append(f"{obj}: {exc}")
            else:
                count += 1
        if count:
            self.message_user(request, done(count), messages.SUCCESS)
        for message in refused[:ACTION_ERRORS_SHOWN]:
            self.message_user(request, message, messages.ERROR)
        if len(refused) > ACTION_ERRORS_SHOWN:
            more = len(refused) - ACTION_ERRORS_SHOWN
            self.message_user(
                request,
                ngettext("%(count)d more was refused.", "%(count)d more were refused.", more)
                % {"count": more},
                messages.ERROR,
            )


class ReadOnlyAdmin(BigTableAdmin[M]):
    """Results written only by the services and the worker."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False


class PlanAdmin(BigTableAdmin[M]):
    """Jobs and classrooms: forms and actions that call the services.

    Deleting is not offered: there is no delete service (a delete would skip the
    rules and cascade over every run); cancel instead.
    """

    add_form: type[ServiceModelForm[M]]
    change_form: type[ServiceModelForm[M]]
    add_fieldsets: Any = ()
    #: Fields shown on the change form that no service changes.
    fixed_fields: tuple[str, ...] = ()
    formfield_overrides = {models.DateTimeField: {"widget": ZonedSplitDateTime}}

    class Media:
        js = ("schedules/time_zone.js",)

    def is_frozen(self, obj: M) -> bool:
        raise NotImplementedError

    @property
    def editable_fields(self) -> tuple[str, ...]:
        """Fields the change form edits (through the services) while the plan can change:
        the change form's own."""
        return tuple(self.change_form._meta.fields or ())

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Django runs the form and its save in one transaction: if the database reports a
        conflict, the whole of it runs again (the services' lock order makes that rare);
        if it keeps reporting one, the page says so and nothing is saved."""

        def view() -> HttpResponse:
            return super(PlanAdmin, self).changeform_view(
                request, object_id, form_url, extra_context
            )

        zone = self.page_zone(request, object_id)
        try:
            with timezone.override(zone) if zone is not None else nullcontext():
                response = run_retrying(view, what=f"admin {self.opts.model_name} form")
                if isinstance(response, TemplateResponse):
                    response.render()  # while the zone is active: the page shows its times
                return response
        except Busy as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def page_zone(self, request: HttpRequest, object_id: str | None) -> zoneinfo.ZoneInfo | None:
        """The zone the form's times are shown and read in: the plan's own (it cannot change
        after creation); on the add form, the zone typed in (posted), or the one it starts
        with (a clone's, or ``?time_zone=`` in the URL). None for a plan without a zone."""
        if not any(field.name == "time_zone" for field in self.model._meta.fields):
            return None
        if object_id is None:
            if request.method == "POST":
                return zone_named(request.POST.get("time_zone"))
            initial = self.get_changeform_initial_data(request).get("time_zone")
            return zone_named(initial if isinstance(initial, str) else None)
        obj = self.get_object(request, object_id)
        return zone_named(getattr(obj, "time_zone", None)) if obj is not None else None

    @admin.display(description="engine")
    def engine(self, obj: M) -> str:
        """The engine holding the latest step (annotated by changelist_queryset)."""
        return getattr(obj, "step_engine", None) or "-"

    @admin.display(description="last lateness")
    def last_lateness(self, obj: M) -> str:
        """Start minus due of the latest run (annotated by changelist_queryset)."""
        return format_lateness(getattr(obj, "last_lateness", None))

    def get_form(
        self, request: HttpRequest, obj: M | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm[M]]:
        base = self.change_form if obj is not None else self.add_form
        # As ModelAdmin.get_form does for its own form: read-only fields leave the form.
        readonly = [f for f in self.get_readonly_fields(request, obj) if f in base.declared_fields]
        kwargs["form"] = type(base.__name__, (base,), dict.fromkeys(readonly))
        form = super().get_form(request, obj, change=change, **kwargs)
        if issubclass(form, ServiceModelForm):
            # A class built for this request by modelform_factory, so this is per request.
            user = request.user
            form.user = user if isinstance(user, User) else None
        return form

    def get_fieldsets(self, request: HttpRequest, obj: M | None = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: M | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        if self.is_frozen(obj):
            return (*self.editable_fields, *self.fixed_fields)
        return self.fixed_fields

    def get_inlines(self, request: HttpRequest, obj: M | None) -> Any:
        return self.inlines if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: M | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: M, form: Any, change: bool) -> None:
        """Nothing left to save: the form wrote through the services when it was validated."""
        if not (isinstance(form, ServiceModelForm) and form.service_wrote):
            raise RuntimeError(f"{type(self).__name__} saves only through a ServiceModelForm")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: M | None = None,
    ) -> HttpResponse:
        adminform = context.get("adminform")
        form = getattr(adminform, "form", None)
        if request.method == "POST" and isinstance(form, ServiceModelForm) and form.service_wrote:
            # The service accepted the form but the page is shown again (an inline was
            # invalid): keep nothing of a save the user is not told about.
            transaction.set_rollback(True, using=router.db_for_write(self.model))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def ask_then_apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[M],
        *,
        form_class: type[forms.Form],
        title: str,
        submit_label: str,
        apply: Callable[[forms.Form], None],
    ) -> HttpResponse | None:
        """An action that needs input: show ``form_class`` first, then ``apply`` it.

        The intermediate page posts back to the changelist with the same action and
        selection (as Django's delete confirmation does); a valid form runs ``apply``.
        """
        form = form_class(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            apply(form)
            return None  # back to the changelist, with the messages
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        objects = list(queryset.select_related(None)[: ACTION_ERRORS_SHOWN * 5 + 1])
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "objects": objects[: ACTION_ERRORS_SHOWN * 5],
            "more": len(objects) > ACTION_ERRORS_SHOWN * 5,
            "selected": selected,
            "select_across": request.POST.get("select_across") == "1",
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "form": form,
            "media": self.media + form.media,
            "submit_label": submit_label,
        }
        return TemplateResponse(request, "admin/schedules/action_form.html", context)
