"""Admin forms. Every write goes through ``schedules.services``; none calls ``Model.save()``.

The service is the validator: once the fields are clean, the form calls the
service (inside the admin's request transaction) and maps the service's
``ValidationError`` onto the fields it names, so the admin shows the rules of
the services next to the right input. ``save()`` returns the object the service
wrote. ``ScheduleAdmin.render_change_form`` rolls the transaction back if the
page is shown again after a successful service call (an inline was invalid),
so nothing is kept from a save the user did not see succeed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django import forms
from django.conf import settings
from django.contrib.admin.widgets import AdminSplitDateTime
from django.contrib.auth.models import User
from django.core.exceptions import (
    NON_FIELD_ERRORS,
    FieldDoesNotExist,
    ImproperlyConfigured,
    ValidationError,
)
from django.db import models, transaction
from django.forms.fields import InvalidJSONInput
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join, json_script
from django.utils.safestring import SafeString, mark_safe

from workers.actions import REGISTRY, job_action_names

from . import services
from .models import RECURRING_SCHEDULE_TYPES, Classroom, Job, ScheduleType, Workflow
from .services.jobs import NAME_MAX, SCHEDULE_FIELDS
from .validation import seconds_text

M = TypeVar("M", bound=models.Model)

if TYPE_CHECKING:
    _ModelFormBase = forms.ModelForm
else:

    class _ModelFormBase(forms.ModelForm):
        # django-stubs makes ModelForm generic; Django itself does not.
        def __class_getitem__(cls, item: Any) -> Any:
            return cls


# --- Help texts (built per form, so they follow the settings in force) ---------------------------


def _type_label(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type_label(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type_label(schema.get('items', {}))}"
    return str(kind)


def payload_summary(action: str) -> SafeString:
    """The payload keys of a registered action, from its pydantic JSON schema."""
    spec = REGISTRY[action]
    schema = spec.payload_model.model_json_schema()
    required = set(schema.get("required", []))
    keys = format_html_join(
        ", ",
        "<code>{}</code> ({}{})",
        (
            (name, _type_label(prop), ", required" if name in required else "")
            for name, prop in schema.get("properties", {}).items()
        ),
    )
    parts = [format_html("{} Payload: {}.", spec.description, keys or "no keys")]
    if schema.get("additionalProperties") is False:
        parts.append(format_html("{}", "Other keys are refused."))
    if schema.get("description"):
        parts.append(format_html("{}", schema["description"]))
    return format_html_join(" ", "{}", ((part,) for part in parts))


def action_choices() -> list[tuple[str, str]]:
    """The actions a job may run (read when the form is built, so late registrations count):
    a classroom's recording actions and the workflow engine's own are not offered."""
    return [("", "---------"), *((name, name) for name in job_action_names())]


def action_help() -> SafeString:
    return mark_safe(
        "What the worker runs when the job is due; the keys of its payload are shown under "
        "Payload (all of them: docs/actions.md). Only actions a job may run are listed: the "
        "recording actions run on a classroom's timeline (add a <i>Classroom</i> for them)."
    )


def action_payload_help(action: str | None) -> SafeString:
    """The help of one action's payload: its description and keys."""
    if action is not None and action in REGISTRY:
        return format_html("<code>{}</code>: {}", action, payload_summary(action))
    return format_html("{}", "Choose an action to see the keys of its payload.")


def payload_help(action: str | None = None) -> SafeString:
    """What every payload obeys, then the chosen action's keys (the form's script swaps
    these for the action chosen in the page)."""
    limit = settings.SCHEDULES_MAX_PAYLOAD_BYTES
    text = format_html(
        "The action's arguments as a JSON object; an empty box is <code>{{}}</code>. It is "
        "checked against the action's schema when you save (and as you type, in the browser), "
        "and may be at most {} bytes as compact, ASCII-escaped JSON "
        "(SCHEDULES_MAX_PAYLOAD_BYTES). It is stored normalized: keys left at their default "
        "value are dropped. The worker reads it from the database when the job runs, so an "
        "edit made before then is what runs.",
        limit,
    )
    return format_html(
        "{}<div data-payload-action-help>{}</div>", text, action_payload_help(action)
    )


def action_editor_data(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What the job form's script knows of each action: its payload's JSON schema (to check
    the payload in the browser), its help, and whether it polls (to show the poll fields)."""
    data: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = REGISTRY[name]
        data[name] = {
            "description": spec.description,
            "polls": spec.polls,
            "schema": spec.payload_model.model_json_schema(),
            "help": str(action_payload_help(name)),
        }
    return data


def precision_help() -> str:
    from .costs import format_usd
    from .engines import engine_name_for_precision, price_per_timer

    def engine(precision: str) -> str:
        try:
            name = engine_name_for_precision(precision)
        except ImproperlyConfigured:
            return "not configured"
        try:
            return f"{name!r} ({format_usd(price_per_timer(name))} per run)"
        except ImproperlyConfigured:
            return repr(name)

    return (
        "How late a run may start, which chooses the engine that holds its timer "
        f"(SCHEDULES_ENGINES): seconds, now {engine('seconds')}; minute (within about a "
        f"minute), now {engine('minute')}; relaxed (minutes to hours), now "
        f"{engine('relaxed')}. Changing it on a scheduled job moves its pending step to the "
        "new class's engine."
    )


def time_zone_help() -> str:
    return (
        "An IANA time zone name such as Europe/Paris. The date and time fields of this form are "
        "read in it (and shown in it on the saved object), a cron rule is read in it, and lists "
        "show the object's times in it, with UTC on hover. Cannot be changed after creation."
    )


def due_help(what: str) -> str:
    return (
        f"{what} It may be at most {seconds_text(settings.SCHEDULES_PAST_GRACE)} in the past "
        "(SCHEDULES_PAST_GRACE; it then runs at once) and at most "
        f"{seconds_text(settings.SCHEDULES_MAX_AHEAD)} ahead (SCHEDULES_MAX_AHEAD)."
    )


def max_attempts_help() -> str:
    return (
        "Attempts before the job is marked failed: an attempt that fails with a transient error "
        "or an unexpected exception is retried with exponential backoff until this many have "
        "run; a permanent error fails the job at once. A whole number from 1 to "
        f"{settings.SCHEDULES_MAX_ATTEMPTS_LIMIT} (SCHEDULES_MAX_ATTEMPTS_LIMIT)."
    )


def ping_help() -> str:
    return (
        "Seconds between live pings while the class runs: the first ping goes one interval "
        "after the start and none at the end. At least "
        f"{settings.SCHEDULES_MIN_PING_INTERVAL} s (SCHEDULES_MIN_PING_INTERVAL), and the class "
        f"may have at most {settings.SCHEDULES_MAX_STEPS_PER_CLASSROOM} steps in all "
        "(SCHEDULES_MAX_STEPS_PER_CLASSROOM)."
    )


def schedule_type_help() -> SafeString:
    return mark_safe(
        "<b>once</b>: runs at the due time. <b>rate</b>: every N rate units, counted in "
        "elapsed time from the start. <b>cron</b>: by a 5-field cron expression read in the "
        "job's time zone (daylight-saving changes included). Fill in only the fields of the "
        "type you choose; the others must stay empty. A recurring job holds one timer at a "
        "time, its next occurrence."
    )


def rate_help() -> str:
    return (
        "A rate rule: run every N (rate every) rate units. At least "
        f"{settings.SCHEDULES_MIN_RATE_SECONDS:g} s (SCHEDULES_MIN_RATE_SECONDS)."
    )


def webhook_help() -> str:
    hosts = ", ".join(settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS) or "none"
    return (
        "Optional: this job's alerts (a failure, an uncertain run; SCHEDULES_NOTIFY_EVENTS) "
        "are also POSTed here as signed JSON (docs/alerts.md). Its host must be in "
        f"SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS, now: {hosts}."
    )


CRON_HELP = (
    "A cron rule: minute hour day-of-month month day-of-week, e.g. 0 9 * * 1-5 (09:00 on "
    "weekdays) or */15 * * * * (every 15 minutes), in the job's time zone. A time skipped by a "
    "daylight-saving change runs once right after it; a time repeated runs once, at its first "
    "pass."
)
STARTS_HELP = (
    "When the rule begins (default: now, as the job is saved). A rate counts its intervals "
    "from here. Occurrences before now are not run."
)
ENDS_HELP = "No occurrence after this time. Empty: no end."
MAX_RUNS_HELP = (
    "The job ends after this many runs (skipped occurrences do not count). Empty: no limit."
)
MISSED_HELP = (
    "When the job is behind, e.g. the scheduler was down: an occurrence is missed when a later "
    "one is already due as it is taken (a run that is merely late is not). Run once now (the "
    "default) runs it once for all of them; run every missed occurrence runs each in turn; "
    "skip runs none and goes on with the next occurrence after now."
)
PAUSE_AFTER_HELP = (
    "Pause the job after this many failed occurrences in a row (a failed occurrence is one "
    "whose attempts all failed; a success starts the count again). Its reason then reads "
    '"paused after 3 consecutive failures: <the last error>"; resume it once the cause is '
    "fixed. Empty: it never pauses itself."
)
OVERLAP_HELP = (
    "An occurrence due while the previous one is still going (running, retrying or polling): "
    "skip it (the default: the next occurrence is planned when the previous one is over), or "
    "run it alongside (the next occurrence is planned as soon as one starts)."
)


def poll_help(field: str) -> str:
    texts = {
        "poll_interval": (
            "For actions that poll (they may report 'not done yet'): seconds between checks, at "
            f"least {settings.SCHEDULES_MIN_POLL_INTERVAL} (SCHEDULES_MIN_POLL_INTERVAL). Each "
            "check is a run. Leave the poll fields empty for other actions."
        ),
        "poll_max_checks": "Most checks, the first included; then the job fails as not done.",
        "poll_timeout": (
            "Seconds after the first check's due time by which the action must report done; a "
            "last check runs at that deadline. Give this, the maximum number of checks, or both."
        ),
    }
    return texts[field]


SCHEDULE_HELPS: dict[str, Callable[[], str]] = {
    "schedule_type": schedule_type_help,
    "rate_every": rate_help,
    "rate_unit": rate_help,
    "cron": lambda: CRON_HELP,
    "starts_at": lambda: STARTS_HELP,
    "ends_at": lambda: ENDS_HELP,
    "max_runs": lambda: MAX_RUNS_HELP,
    "missed_policy": lambda: MISSED_HELP,
    "overlap_policy": lambda: OVERLAP_HELP,
    "poll_interval": lambda: poll_help("poll_interval"),
    "poll_max_checks": lambda: poll_help("poll_max_checks"),
    "poll_timeout": lambda: poll_help("poll_timeout"),
    "pause_after_failures": lambda: PAUSE_AFTER_HELP,
}


REPLAN_HELP = (
    " Changing the start, the end or the interval re-plans the steps that have not run yet "
    "(a ping whose new time has passed is dropped, not sent late); steps that ran keep their "
    "history. Once the recording has started, the start is fixed: only the end and the "
    "interval can change."
)


# --- Fields ---------------------------------------------------------------------------------------


class PayloadEditor(forms.Textarea):
    """A job's payload box, and what ``schedules/job_form.js`` needs to check it against the
    chosen action's schema and to show only that action's help: each action's schema and
    help as JSON (``json_script``, no inline script). The form sets ``actions`` (those the
    page offers) and, on a change form, ``fixed_action``. Without the script this is the
    plain box: the service checks the payload when the form is saved, either way."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"rows": 8, "cols": 80, "class": "vLargeTextField", **(attrs or {})})
        self.actions: list[str] = []
        self.fixed_action = ""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        attrs = dict(attrs or {})
        data_id = f"{attrs.get('id') or 'id_' + name}_actions"
        attrs["data-payload-actions"] = data_id
        if self.fixed_action:
            attrs["data-action"] = self.fixed_action
        box = super().render(name, value, attrs, renderer)
        known = [action for action in self.actions if action in REGISTRY]
        return format_html("{}{}", box, json_script(action_editor_data(known), data_id))


class PayloadField(forms.JSONField):
    """JSON edited as indented text; an empty box means an empty payload."""

    widget = forms.Textarea(attrs={"rows": 8, "cols": 80, "class": "vLargeTextField"})

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


# --- The base form -----------------------------------------------------------------------------


class ServiceModelForm(_ModelFormBase[M]):
    """A model form whose only write is a service call (see the module docstring).

    Subclasses implement ``call_service``; the admin sets ``user`` to the
    request's user on the form class it builds per request.
    """

    user: User | None = None
    service_result: M | None = None

    def call_service(self) -> M:
        raise NotImplementedError

    @property
    def service_wrote(self) -> bool:
        """Whether the service accepted the form (and so may have written)."""
        return self.service_result is not None

    def _post_clean(self) -> None:
        # Instead of ModelForm's model validation: the service checks everything.
        if self.errors:  # set by full_clean already: this does not validate again
            return
        try:
            # A savepoint: a form that calls two services keeps neither if one refuses.
            with transaction.atomic():
                self.service_result = self.call_service()
        except ValidationError as exc:
            self.add_service_errors(exc)

    def add_service_errors(self, exc: ValidationError) -> None:
        """Each message next to the field it names; others (e.g. status) above the form."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc)
            return
        for field, errors in exc.error_dict.items():
            if field in self.fields or field == NON_FIELD_ERRORS:
                self.add_error(None if field == NON_FIELD_ERRORS else field, errors)
            else:
                label = self._label_for(field)
                self.add_error(
                    None, [f"{label}: {message}" for error in errors for message in error.messages]
                )

    def _label_for(self, name: str) -> str:
        try:
            field = self._meta.model._meta.get_field(name)
        except FieldDoesNotExist:
            return name
        return str(getattr(field, "verbose_name", name)).capitalize()

    def save(self, commit: bool = True) -> M:
        if self.service_result is None:
            raise ValueError("The form's service has not accepted it; call is_valid() first.")
        self.instance = self.service_result
        return self.instance

    def save_m2m(self) -> None:
        return None

    def _changed(self, name: str) -> bool:
        return name in self.fields and name in self.changed_data

    def _changes(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The cleaned values of the fields among ``names`` that the user changed."""
        return {name: self.cleaned_data[name] for name in names if self._changed(name)}


def _combined(errors: list[ValidationError]) -> ValidationError:
    by_field: dict[str, list[ValidationError]] = {}
    for exc in errors:
        for field, messages in exc.update_error_dict({}).items():
            by_field.setdefault(field, []).extend(messages)
    return ValidationError(by_field)


def _collect(errors: list[ValidationError], call: Callable[[], M], fallback: M) -> M:
    try:
        return call()
    except ValidationError as exc:
        errors.append(exc)
        return fallback


# --- Jobs -----------------------------------------------------------------------------------------


def _set_helps(form: forms.BaseForm, helps: dict[str, Callable[[], str]]) -> None:
    for name, help_text in helps.items():
        if name in form.fields:
            form.fields[name].help_text = help_text()


#: A job form's script: only the sections of the chosen schedule type and action, and the
#: payload checked in the browser (the forms work without it).
JOB_FORM_JS = "schedules/job_form.js"
#: Add form fields in sections the script may hide (so not sent) that still have a default.
DEFAULTED_FIELDS = ("missed_policy", "overlap_policy")


def _payload_editor(form: forms.BaseForm) -> PayloadEditor | None:
    field = form.fields.get("payload")
    widget = field.widget if field is not None else None
    return widget if isinstance(widget, PayloadEditor) else None


def _chosen_action(form: forms.BaseForm) -> str | None:
    """The action a bound form was sent with, or an unbound one starts with."""
    if "action" not in form.fields:
        return None
    value = form["action"].value()
    return value if isinstance(value, str) else None


class JobAddForm(ServiceModelForm[Job]):
    """Creates a job with ``services.job_schedule``, owned by the admin user."""

    action = forms.ChoiceField(choices=action_choices)
    payload = PayloadField(required=False, initial=dict, widget=PayloadEditor)

    class Media:
        js = (JOB_FORM_JS,)

    class Meta:
        model = Job
        fields = (
            "name",
            "action",
            "payload",
            "due_at",
            "time_zone",
            "precision",
            "max_attempts",
            "webhook_url",
            *SCHEDULE_FIELDS,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _set_helps(
            self,
            {
                "action": action_help,
                "webhook_url": webhook_help,
                "payload": lambda: payload_help(_chosen_action(self)),
                "due_at": lambda: due_help("When a one-off job runs (leave it empty otherwise)."),
                "time_zone": time_zone_help,
                "precision": precision_help,
                "max_attempts": max_attempts_help,
                **SCHEDULE_HELPS,
            },
        )
        if "due_at" in self.fields:
            self.fields["due_at"].required = False
        for name in DEFAULTED_FIELDS:
            if name in self.fields:  # the policies: hidden (not sent) for a one-off job
                self.fields[name].required = False
        if "max_attempts" in self.fields and not self.is_bound:
            self.fields["max_attempts"].initial = settings.SCHEDULES_DEFAULT_MAX_ATTEMPTS
        editor = _payload_editor(self)
        if editor is not None:
            editor.actions = job_action_names()

    def call_service(self) -> Job:
        data = self.cleaned_data
        schedule = {name: data[name] for name in SCHEDULE_FIELDS if name in data}
        for name in DEFAULTED_FIELDS:
            if not schedule.get(name):  # not sent: the service's default
                schedule.pop(name, None)
        return services.job_schedule(
            action=data["action"],
            payload=data.get("payload") or {},
            due_at=data.get("due_at"),
            precision=data["precision"],
            max_attempts=data["max_attempts"],
            name=data.get("name", ""),
            time_zone=data["time_zone"],
            owner=self.user,
            webhook_url=data.get("webhook_url") or "",
            **schedule,
        )


class JobChangeForm(ServiceModelForm[Job]):
    """Edits a job: name, payload, attempts, precision, and a recurring job's rule and
    policies with ``services.job_update``, a one-off job's due time with
    ``services.job_reschedule``; only what changed is sent."""

    payload = PayloadField(required=False, widget=PayloadEditor)

    class Media:
        js = (JOB_FORM_JS,)

    class Meta:
        model = Job
        fields = (
            "name",
            "payload",
            "due_at",
            "precision",
            "max_attempts",
            "webhook_url",
            *SCHEDULE_FIELDS,
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _set_helps(
            self,
            {
                "payload": lambda: payload_help(self.instance.action),
                "due_at": lambda: due_help(
                    "When the job runs. Changing it reschedules the job: the old timer is "
                    "disarmed and a message already sent for the old time is skipped."
                ),
                "max_attempts": max_attempts_help,
                "precision": precision_help,
                "webhook_url": webhook_help,
                **SCHEDULE_HELPS,
                "schedule_type": lambda: (
                    "rate or cron. Changing the rule (type, rate, cron, start, end or maximum "
                    "runs) re-plans the next occurrence: the first one of the new rule after "
                    "now. Runs so far keep their history and count against max runs."
                ),
            },
        )
        if self.instance.schedule_type != ScheduleType.ONCE and "schedule_type" in self.fields:
            field = self.fields["schedule_type"]
            assert isinstance(field, forms.ChoiceField)
            field.choices = RECURRING_SCHEDULE_TYPES
        editor = _payload_editor(self)
        if editor is not None:
            editor.actions = [self.instance.action]
            editor.fixed_action = self.instance.action

    def call_service(self) -> Job:
        job = self.instance
        data = self.cleaned_data
        errors: list[ValidationError] = []
        schedule = self._changes(SCHEDULE_FIELDS)
        if schedule or any(
            self._changed(n)
            for n in ("name", "payload", "max_attempts", "precision", "webhook_url")
        ):
            payload = (data.get("payload") or {}) if self._changed("payload") else None
            name = data["name"] if self._changed("name") else None
            attempts = data["max_attempts"] if self._changed("max_attempts") else None
            precision = data["precision"] if self._changed("precision") else None
            webhook = self._changes(("webhook_url",))
            job = _collect(
                errors,
                lambda: services.job_update(
                    job=job,
                    payload=payload,
                    name=name,
                    max_attempts=attempts,
                    precision=precision,
                    **webhook,
                    **schedule,
                ),
                job,
            )
        if self._changed("due_at"):
            due_at = data["due_at"]
            job = _collect(errors, lambda: services.job_reschedule(job=job, due_at=due_at), job)
        if errors:
            raise _combined(errors)
        return job


#: What a clone copies from a job into the add form, besides its name.
CLONED_FIELDS = (
    "action",
    "payload",
    "time_zone",
    "precision",
    "max_attempts",
    "webhook_url",
    *SCHEDULE_FIELDS,
)
CLONE_SUFFIX = " (copy)"


def job_clone_initial(job: Job) -> dict[str, Any]:
    """The add form's initial values for a copy of ``job``: what a user gave it (its name
    marked as a copy), a one-off job's due time, a recurring job's rule from its start.
    Nothing is written: the copy exists once the user saves the add form."""
    initial = {name: copy.deepcopy(getattr(job, name)) for name in CLONED_FIELDS}
    base = job.name or f"job {job.pk}"
    initial["name"] = base[: NAME_MAX - len(CLONE_SUFFIX)] + CLONE_SUFFIX
    if not job.is_recurring:
        initial["due_at"] = job.due_at
    return {name: value for name, value in initial.items() if value is not None}


def job_initial_from_query(initial: dict[str, Any]) -> dict[str, Any]:
    """Initial values read from the add form's GET parameters (text, as Django reads them):
    the payload parsed as JSON, the times as ISO 8601 (a value that is neither is dropped)."""
    parsed = dict(initial)
    payload = parsed.get("payload")
    if isinstance(payload, str):
        try:
            parsed["payload"] = json.loads(payload)
        except ValueError:
            parsed["payload"] = InvalidJSONInput(payload)
    for name in ("due_at", "starts_at", "ends_at"):
        value = parsed.get(name)
        if isinstance(value, str):
            try:
                when = parse_datetime(value.strip())
            except ValueError:
                when = None
            if when is None:
                del parsed[name]
            else:
                parsed[name] = when
    return parsed


# --- Classrooms -----------------------------------------------------------------------------------


class ClassroomAddForm(ServiceModelForm[Classroom]):
    """Creates a classroom and its steps with ``services.classroom_create``."""

    class Meta:
        model = Classroom
        fields = (
            "title",
            "recording_service_ref",
            "start",
            "end",
            "live_ping_interval",
            "time_zone",
            "precision",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        helps: dict[str, Callable[[], str]] = {
            "start": lambda: due_help("The recording starts at this time."),
            "end": lambda: "The recording stops at this time; it must be after the start.",
            "live_ping_interval": ping_help,
            "time_zone": time_zone_help,
            "precision": precision_help,
        }
        for name, help_text in helps.items():
            if name in self.fields:
                self.fields[name].help_text = help_text()
        if "live_ping_interval" in self.fields and not self.is_bound:
            self.fields["live_ping_interval"].initial = 60

    def call_service(self) -> Classroom:
        data = self.cleaned_data
        return services.classroom_create(
            title=data["title"],
            start=data["start"],
            end=data["end"],
            recording_service_ref=data["recording_service_ref"],
            live_ping_interval=data["live_ping_interval"],
            precision=data["precision"],
            time_zone=data["time_zone"],
            owner=self.user,
        )


class ClassroomChangeForm(ServiceModelForm[Classroom]):
    """Edits a classroom with ``services.classroom_update``; only what changed is sent."""

    class Meta:
        model = Classroom
        fields = ("title", "recording_service_ref", "start", "end", "live_ping_interval")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        helps: dict[str, Callable[[], str]] = {
            "start": lambda: due_help("The recording starts at this time." + REPLAN_HELP),
            "end": lambda: (
                "The recording stops at this time; it must be after the start." + REPLAN_HELP
            ),
            "live_ping_interval": lambda: ping_help() + REPLAN_HELP,
            "recording_service_ref": lambda: (
                "The recording service's identifier for this class's stream; it cannot "
                "change once the recording has started."
            ),
        }
        for name, help_text in helps.items():
            if name in self.fields:
                self.fields[name].help_text = help_text()

    def call_service(self) -> Classroom:
        fields = ("title", "recording_service_ref", "start", "end", "live_ping_interval")
        changes = self._changes(fields)
        if not changes:
            return self.instance
        return services.classroom_update(classroom=self.instance, **changes)


# --- Workflows ------------------------------------------------------------------------------------

DEFINITION_HELP = (
    "StartAt and States, in the workflow language: Task, Choice, Wait, Succeed and Fail "
    "states. Checked when saved; each error names the state and the field. Saving a "
    "changed definition makes the next version: an execution keeps the version it "
    "started with."
)


class DefinitionField(PayloadField):
    widget = forms.Textarea(attrs={"rows": 24, "cols": 100, "class": "vLargeTextField"})


class WorkflowAddForm(ServiceModelForm[Workflow]):
    """Creates a workflow with ``services.workflow_create``, owned by the admin user."""

    definition = DefinitionField(help_text=DEFINITION_HELP)

    class Meta:
        model = Workflow
        fields = ("name", "description", "definition", "precision", "overlap_policy")

    def call_service(self) -> Workflow:
        data = self.cleaned_data
        return services.workflow_create(
            name=data["name"],
            definition=data["definition"],
            description=data.get("description", ""),
            precision=data["precision"],
            overlap_policy=data["overlap_policy"],
            owner=self.user,
        )


class WorkflowChangeForm(ServiceModelForm[Workflow]):
    """Edits a workflow's definition and description with ``services.workflow_update``."""

    definition = DefinitionField(help_text=DEFINITION_HELP)

    class Meta:
        model = Workflow
        fields = ("description", "definition", "precision", "overlap_policy")

    def call_service(self) -> Workflow:
        changes = self._changes(("description", "definition", "precision", "overlap_policy"))
        if not changes:
            return self.instance
        return services.workflow_update(workflow=self.instance, **changes)


# --- Intermediate forms of admin actions ----------------------------------------------------------


class StartExecutionForm(forms.Form):
    """What the selected workflows' executions start with."""

    input = PayloadField(
        required=False,
        initial=dict,
        help_text="The data each execution starts with: a JSON object (Tasks read it by "
        "path, e.g. $.env). Empty: {}.",
    )
    start_key = forms.CharField(
        required=False,
        max_length=255,
        help_text="Optional. A workflow already started with this key is not started again.",
    )


class RescheduleJobsForm(forms.Form):
    """The new due time for the jobs selected in the changelist."""

    due_at = forms.SplitDateTimeField(
        label="New due time",
        widget=AdminSplitDateTime(),
        help_text="",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["due_at"].help_text = due_help(
            f"In the admin's time zone, {timezone.get_current_timezone_name()}. Each selected "
            "job moves to this time under a new version: its old timer is disarmed and a "
            "message already sent for the old time is skipped."
        )


class ShiftClassroomsForm(forms.Form):
    """How far to move the selected classrooms (start and end together)."""

    minutes = forms.IntegerField(
        label="Move by (minutes)",
        help_text=(
            "Added to each selected classroom's start and end (negative moves earlier). "
            "Steps that have not run are re-planned; steps that ran keep their history. "
            "A classroom already live keeps its start."
        ),
        min_value=-7 * 24 * 60,
        max_value=366 * 24 * 60,
    )

    def clean_minutes(self) -> int:
        minutes: int = self.cleaned_data["minutes"]
        if minutes == 0:
            raise ValidationError("must not be 0: the classrooms would not move")
        return minutes
