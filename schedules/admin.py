"""The admin for jobs, classrooms, their steps and runs.

Writes go through ``schedules.services`` only: the add and change forms
(``schedules.forms``) call them and show their errors on the form, and the
actions call them per object. Steps and runs are results, so they are
read-only. Every changelist is built for tables of millions of rows (see
STYLE.md, "Admin for big tables"): no full count, no N+1, big columns deferred,
sorting and time-window filters only on indexed columns (no date_hierarchy:
its year list is a DISTINCT over the whole table), filters that need no
query, and inlines that load a bounded number of rows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.paginator import Paginator
from django.db import models, router, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from workers.actions import REGISTRY

from . import selectors, services
from .engines import get_engine
from .forms import (
    ClassroomAddForm,
    ClassroomChangeForm,
    JobAddForm,
    JobChangeForm,
    RescheduleJobsForm,
    ServiceModelForm,
    ShiftClassroomsForm,
    StartExecutionForm,
    WorkflowAddForm,
    WorkflowChangeForm,
)
from .models import (
    Classroom,
    Execution,
    ExecutionStatus,
    Job,
    NotificationDelivery,
    PlanStatus,
    Run,
    Step,
    Workflow,
    WorkflowVersion,
)
from .notifications.services import notification_resend
from .selectors import describe_schedule
from .services.transactions import Busy, run_retrying
from .workflow_drawing import definition_svg, execution_svg

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


# --- Display helpers --------------------------------------------------------------------------


def format_lateness(value: dt.timedelta | None) -> str:
    """Start minus due time, signed: ``+0.012 s``, ``-1.5 s`` as ``-1.500 s``, ``+1 h 03 min``."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours} h {minutes:02d} min"
    return f"{sign}{minutes} min {secs:02d} s"


def _change_link(model: type[models.Model], pk: int | None, label: str) -> str:
    if pk is None:
        return "-"
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, label)


def owner_link(obj: Step | Run) -> str:
    """The job, classroom or execution a step or run belongs to, from the ids alone."""
    if obj.job_id is not None:
        return _change_link(Job, obj.job_id, f"job {obj.job_id}")
    if obj.execution_id is not None:
        return _change_link(Execution, obj.execution_id, f"execution {obj.execution_id}")
    return _change_link(Classroom, obj.classroom_id, f"classroom {obj.classroom_id}")


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


# --- Filters that need no query ---------------------------------------------------------------


class ActionFilter(admin.SimpleListFilter):
    """The registered actions (a DISTINCT over millions of rows is what this avoids)."""

    title = "action"
    parameter_name = "action__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(REGISTRY)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(action=value) if value else queryset


class EngineFilter(admin.SimpleListFilter):
    """The engines named in SCHEDULES_ENGINES; any other name works in the URL."""

    title = "engine"
    parameter_name = "engine__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        engines: dict[str, str] = settings.SCHEDULES_ENGINES
        return [(name, name) for name in sorted(set(engines.values()))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(engine=value) if value else queryset


class TimeWindowFilter(admin.SimpleListFilter):
    """Fixed windows around now on an indexed date column: a range scan, never a DISTINCT.

    Django's ``date_hierarchy`` lists the years present with a DISTINCT over the
    whole table on every unfiltered changelist; these choices need no query.
    """

    field = ""
    #: (value, label, start offset, end offset) relative to now; None is open-ended.
    windows: tuple[tuple[str, str, dt.timedelta | None, dt.timedelta | None], ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _start, _end in self.windows]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        now = timezone.now()
        for key, _label, start, end in self.windows:
            if key == value:
                if start is not None:
                    queryset = queryset.filter(**{f"{self.field}__gte": now + start})
                if end is not None:
                    queryset = queryset.filter(**{f"{self.field}__lt": now + end})
        return queryset


HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
DUE_WINDOWS = (
    ("overdue", "overdue (before now)", None, dt.timedelta(0)),
    ("next_hour", "in the next hour", dt.timedelta(0), HOUR),
    ("next_day", "in the next 24 hours", dt.timedelta(0), DAY),
    ("next_week", "in the next 7 days", dt.timedelta(0), 7 * DAY),
    ("later", "after the next 7 days", 7 * DAY, None),
    ("past_day", "in the last 24 hours", -DAY, dt.timedelta(0)),
    ("past_week", "in the last 7 days", -7 * DAY, dt.timedelta(0)),
)
PAST_WINDOWS = (
    ("past_hour", "in the last hour", -HOUR, None),
    ("past_day", "in the last 24 hours", -DAY, None),
    ("past_week", "in the last 7 days", -7 * DAY, None),
    ("older", "before the last 7 days", None, -7 * DAY),
)


class DueFilter(TimeWindowFilter):
    title = "due"
    parameter_name = "due"
    field = "due_at"
    windows = DUE_WINDOWS


class StartFilter(TimeWindowFilter):
    title = "start"
    parameter_name = "starts"
    field = "start"
    windows = DUE_WINDOWS


class StartedFilter(TimeWindowFilter):
    title = "started"
    parameter_name = "started"
    field = "started_at"
    windows = PAST_WINDOWS


# --- Bounded, read-only inlines ---------------------------------------------------------------


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


class StepInline(ReadOnlyInline[Step]):
    model = Step
    fields = ("action", "sequence", "due_at", "state", "version", "engine", "arm_state", "attempts")
    readonly_fields = fields
    ordering = ("-due_at", "-id")
    defer = ("arm_error", "external_ref")
    order_label = "latest due"
    verbose_name_plural = "steps (latest due first)"


class JobStepInline(ReadOnlyInline[Step]):
    """A job's steps by occurrence and check, newest first: the order of the unique
    (job, sequence, poll_number) index, so a recurring job's millionth occurrence costs
    the same as its first."""

    fields = (
        "action",
        "sequence",
        "poll_number",
        "due_at",
        "state",
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
        "started_at",
        "status",
        "action",
        "step_link",
        "attempt",
        "version",
        "due_at",
        "lateness_display",
        "uncertain",
        "note",
    )
    readonly_fields = fields
    ordering = ("-started_at", "-id")
    defer: tuple[str, ...] = ("result", "error")
    verbose_name_plural = "runs (newest first)"

    @admin.display(description="step")
    def step_link(self, run: Run) -> str:
        return _change_link(Step, run.step_id, f"step {run.step_id}")

    @admin.display(description="lateness")
    def lateness_display(self, run: Run) -> str:
        return format_lateness(run.lateness)


# --- Changelists for big tables ---------------------------------------------------------------


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

    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
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

        try:
            return run_retrying(view, what=f"admin {self.opts.model_name} form")
        except Busy as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

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


# --- Jobs ---------------------------------------------------------------------------------------

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


# --- Classrooms -------------------------------------------------------------------------------


@admin.register(Classroom)
class ClassroomAdmin(PlanAdmin[Classroom]):
    add_form = ClassroomAddForm
    change_form = ClassroomChangeForm
    list_display = (
        "id",
        "title",
        "status",
        "start",
        "end",
        "live_ping_interval",
        "engine",
        "last_lateness",
        "recording_service_ref",
        "owner",
    )
    list_display_links = ("id", "title")
    list_filter = ("status", StartFilter, "precision")
    list_select_related = ("owner",)
    search_fields = ("title", "recording_service_ref")
    search_help_text = "Part of a classroom's title or recording reference, or a classroom id."
    sortable_by = ("id", "start")
    ordering = ("-start",)
    raw_id_fields = ("owner",)
    inlines = (StepInline, RunInline)
    actions = ("cancel_selected", "shift_selected")
    add_fieldsets = (
        (None, {"fields": ("title", "recording_service_ref")}),
        ("When", {"fields": ("start", "end", "live_ping_interval", "time_zone", "precision")}),
    )
    fieldsets = (
        (None, {"fields": ("title", "recording_service_ref")}),
        ("When", {"fields": ("start", "end", "live_ping_interval", "time_zone", "precision")}),
        ("State", {"fields": ("status", "owner", "created_at", "updated_at")}),
    )
    fixed_fields = ("time_zone", "precision", "status", "owner", "created_at", "updated_at")

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


# --- Steps and runs (read-only) -----------------------------------------------------------------


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin[Step]):
    list_display = (
        "id",
        "action",
        "owner",
        "state",
        "due_at",
        "engine",
        "expected_lateness",
        "version",
        "arm_state",
        "timer",
        "attempts_display",
    )
    list_filter = ("state", DueFilter, EngineFilter, "arm_state", "precision", ActionFilter)
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
        "status",
        "action",
        "attempt",
        "version",
        "due_at",
        "started_at",
        "lateness_display",
        "engine_lateness_display",
        "engine",
        "uncertain",
        "step_link",
        "owner",
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
        return _change_link(Step, run.step_id, f"step {run.step_id}")

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


# --- Workflows ------------------------------------------------------------------------------------


class WorkflowExecutionInline(ReadOnlyInline[Execution]):
    """The workflow's newest executions."""

    model = Execution
    fields = ("started_at", "status", "state_name", "version_number", "error", "finished_at")
    readonly_fields = fields
    ordering = ("-started_at", "-id")
    defer = ("input", "data", "history", "version__definition")
    verbose_name_plural = "executions (newest first)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("version")

    @admin.display(description="version")
    def version_number(self, execution: Execution) -> int:
        return execution.version.version


class ExecutionStepInline(ReadOnlyInline[Step]):
    """Each Task and Wait the execution entered, latest first."""

    model = Step
    fields = ("state_name", "action", "due_at", "state", "version", "engine", "attempts")
    readonly_fields = fields
    ordering = ("-sequence",)
    defer = ("arm_error", "external_ref", "payload")
    order_label = "latest"
    verbose_name_plural = "steps (latest state first)"


class ExecutionRunInline(RunInline):
    """Each state's runs, with their lateness and errors."""

    fields = (
        "started_at",
        "state",
        "status",
        "action",
        "step_link",
        "attempt",
        "lateness_display",
        "uncertain",
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
    actions = ("start_selected",)
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
        return _change_link(Job, job.pk, f"{describe_schedule(job)}{state}")

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
class ExecutionAdmin(BigTableAdmin[Execution]):
    """Executions are written by the services and the worker; shown, and cancelled here."""

    list_display = (
        "id",
        "workflow",
        "version_number",
        "status",
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

    def has_delete_permission(self, request: HttpRequest, obj: Execution | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Execution]:
        return super().get_queryset(request).select_related("workflow", "version")

    @admin.display(description="version")
    def version_number(self, execution: Execution) -> int:
        return execution.version.version

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


# --- Alerts ---------------------------------------------------------------------------------------


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
        "status",
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
            return _change_link(Job, delivery.job_id, str(delivery.job))
        execution = delivery.execution_id
        if execution is not None:
            return _change_link(Execution, execution, f"execution {execution}")
        return _change_link(Run, delivery.run_id, f"run {delivery.run_id}")

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
