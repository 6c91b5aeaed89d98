"""The admin: writes through the services, errors on the form, read-only results, big tables."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django import forms
from django.contrib import admin as django_admin
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from schedules import admin as schedules_admin
from schedules import services
from schedules.admin import TimeWindowFilter
from schedules.engines import ENGINE_ALIASES, Timer, get_engine
from schedules.engines.local import LocalEngine
from schedules.forms import JobAddForm
from schedules.models import (
    ArmState,
    Classroom,
    Job,
    PlanStatus,
    Precision,
    Run,
    RunStatus,
    Step,
    StepState,
)
from schedules.selectors import job_next_occurrences
from workers.actions import REGISTRY

pytestmark = pytest.mark.django_db


# --- Helpers -------------------------------------------------------------------------------------


def future(**delta: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(**(delta or {"hours": 1}))


def url(view: str, *args: Any) -> str:
    return reverse(f"admin:schedules_{view}", args=args)


def make_job(action: str = "noop", **kwargs: Any) -> Job:
    kwargs.setdefault("due_at", future())
    return services.job_schedule(action=action, **kwargs)


def make_classroom(minutes: float = 5, interval: int = 60, **kwargs: Any) -> Classroom:
    start = kwargs.pop("start", future())
    return services.classroom_create(
        title=kwargs.pop("title", "Maths"),
        start=start,
        end=start + dt.timedelta(minutes=minutes),
        recording_service_ref=kwargs.pop("recording_service_ref", "room-42"),
        live_ping_interval=interval,
        **kwargs,
    )


def add_runs(step: Step, count: int) -> list[Run]:
    """``count`` finished runs of ``step``; run i started i seconds before the newest."""
    newest = timezone.now()
    return Run.objects.bulk_create(
        Run(
            step=step,
            job_id=step.job_id,
            classroom_id=step.classroom_id,
            action=step.action,
            version=step.version,
            attempt=1,
            status=RunStatus.SUCCEEDED,
            due_at=step.due_at,
            started_at=newest - dt.timedelta(seconds=i),
            finished_at=newest - dt.timedelta(seconds=i) + dt.timedelta(milliseconds=5),
            lateness=dt.timedelta(milliseconds=i),
            result={"i": i, "blob": "x" * 200},
            error="",
        )
        for i in range(count)
    )


def split(name: str, value: dt.datetime) -> dict[str, str]:
    """The admin's split date/time widget fields, in the current time zone."""
    local = timezone.localtime(value)
    return {f"{name}_0": local.strftime("%Y-%m-%d"), f"{name}_1": local.strftime("%H:%M:%S")}


def job_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Hello",
        "action": "noop",
        "payload": json.dumps({"note": "hi"}),
        "time_zone": "UTC",
        "precision": Precision.SECONDS,
        "max_attempts": "3",
        # What the browser sends for the selects left at their defaults.
        "schedule_type": "once",
        "missed_policy": "run_once",
        "overlap_policy": "skip",
        **split("due_at", overrides.pop("due_at", future())),
    }
    data.update(overrides)
    return data


def classroom_data(start: dt.datetime, end: dt.datetime, **overrides: Any) -> dict[str, Any]:
    return {
        "title": "Maths",
        "recording_service_ref": "room-42",
        "live_ping_interval": "60",
        "time_zone": "UTC",
        "precision": Precision.SECONDS,
        **split("start", start),
        **split("end", end),
        **overrides,
    }


def post_form(client: Any, path: str, data: dict[str, Any]) -> Any:
    """POST a change form as a browser does: with the inlines' management forms."""
    page = client.get(path)
    assert page.status_code == 200
    management: dict[str, Any] = {}
    for inline in page.context["inline_admin_formsets"]:
        form = inline.formset.management_form
        management.update({form.add_prefix(k): v for k, v in form.initial.items()})
    return client.post(path, {**management, **data})


def form_errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "expected the form to be shown again with errors"
    errors: dict[str, list[str]] = response.context["adminform"].form.errors
    return errors


def messages_of(response: Any) -> list[tuple[str, str]]:
    return [(m.level_tag, m.message) for m in get_messages(response.wsgi_request)]


class Spy:
    """Wraps a service function, recording its keyword arguments."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls: list[dict[str, Any]] = []
        real: Callable[..., Any] = getattr(services, name)

        def spy(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            return real(**kwargs)

        monkeypatch.setattr(services, name, spy)


# --- 3. Add and change forms go through the services ---------------------------------------------


def test_adding_a_job_calls_job_schedule_with_the_admin_as_owner(
    admin_client, admin_user, monkeypatch
):
    spy = Spy(monkeypatch, "job_schedule")
    response = admin_client.post(url("job_add"), job_data(payload=json.dumps({"note": ""})))
    assert response.status_code == 302, form_errors(response)
    [call] = spy.calls
    assert call["owner"] == admin_user and call["action"] == "noop"
    job = Job.objects.get()
    assert job.owner == admin_user
    # The service's work, not a bare model save: a step exists and the payload is normalized
    # (a key at its default value is dropped, as the payload help text says).
    assert job.steps.get().due_at == job.due_at
    assert job.payload == {}


def test_editing_a_scheduled_job_calls_job_update_and_job_reschedule(admin_client, monkeypatch):
    job = make_job(payload={"note": "a"}, name="old")
    step = job.steps.get()
    update, reschedule = Spy(monkeypatch, "job_update"), Spy(monkeypatch, "job_reschedule")
    later = future(hours=5).replace(microsecond=0)
    response = post_form(
        admin_client,
        url("job_change", job.pk),
        {
            "name": "new",
            "payload": '{"note": "b"}',
            "max_attempts": "4",
            "precision": "seconds",
            **split("due_at", later),
        },
    )
    assert response.status_code == 302, form_errors(response)
    assert [(c["name"], c["payload"], c["max_attempts"]) for c in update.calls] == [
        ("new", {"note": "b"}, 4)
    ]
    assert [c["due_at"] for c in reschedule.calls] == [later]
    job.refresh_from_db()
    step.refresh_from_db()
    assert (job.name, job.payload, job.max_attempts, job.due_at) == ("new", {"note": "b"}, 4, later)
    # job_reschedule bumped the fence and moved the step.
    assert (step.version, step.due_at, step.max_attempts) == (2, later, 4)


def test_editing_only_the_name_sends_only_the_name(admin_client, monkeypatch):
    job = make_job(payload={"note": "a"}, name="old")
    update, reschedule = Spy(monkeypatch, "job_update"), Spy(monkeypatch, "job_reschedule")
    data = {
        "name": "renamed",
        "payload": '{"note": "a"}',
        "max_attempts": "3",
        "precision": "seconds",
    }
    response = post_form(
        admin_client, url("job_change", job.pk), {**data, **split("due_at", job.due_at)}
    )
    assert response.status_code == 302, form_errors(response)
    assert [{k: v for k, v in c.items() if k != "job"} for c in update.calls] == [
        {"payload": None, "name": "renamed", "max_attempts": None, "precision": None}
    ]
    assert reschedule.calls == []
    assert job.steps.get().version == 1


def test_changing_precision_in_the_admin_moves_the_step(admin_client, settings):
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "test-relaxed"}
    from schedules.engines import ENGINE_ALIASES, get_engine

    ENGINE_ALIASES["test-relaxed"] = "schedules.engines.local.LocalEngine"
    get_engine.cache_clear()
    try:
        job = make_job(name="j")
        data = {"name": "j", "payload": "{}", "max_attempts": "3", "precision": "relaxed"}
        response = post_form(
            admin_client, url("job_change", job.pk), {**data, **split("due_at", job.due_at)}
        )
        assert response.status_code == 302, form_errors(response)
    finally:
        ENGINE_ALIASES.pop("test-relaxed")
        get_engine.cache_clear()
    step = job.steps.get()
    assert (step.precision, step.engine, step.version) == ("relaxed", "test-relaxed", 2)


def test_adding_a_classroom_calls_classroom_create(admin_client, admin_user, monkeypatch):
    spy = Spy(monkeypatch, "classroom_create")
    start = future().replace(microsecond=0)
    response = admin_client.post(
        url("classroom_add"), classroom_data(start, start + dt.timedelta(minutes=3))
    )
    assert response.status_code == 302, form_errors(response)
    assert [c["owner"] for c in spy.calls] == [admin_user]
    classroom = Classroom.objects.get()
    # As the interval's help text says: the first ping one interval after the start, none at
    # the end.
    assert [
        (s.action, (s.due_at - start).total_seconds())
        for s in classroom.steps.order_by("due_at", "pk")
    ] == [("start_recording", 0), ("live_ping", 60), ("live_ping", 120), ("stop_recording", 180)]


def test_editing_a_classroom_calls_classroom_update_with_what_changed(admin_client, monkeypatch):
    start = future().replace(microsecond=0)
    classroom = make_classroom(start=start, minutes=3)
    spy = Spy(monkeypatch, "classroom_update")
    new_end = start + dt.timedelta(minutes=2)
    response = post_form(
        admin_client,
        url("classroom_change", classroom.pk),
        classroom_data(start, new_end, title="Algebra"),
    )
    assert response.status_code == 302, form_errors(response)
    [call] = spy.calls
    assert {k: v for k, v in call.items() if k != "classroom"} == {
        "title": "Algebra",
        "end": new_end,
    }
    stop = classroom.steps.get(action="stop_recording")
    assert stop.due_at == new_end and stop.version == 2  # re-planned by the service


def test_a_page_shown_again_keeps_nothing_the_service_wrote(admin_client):
    """If the service accepted the form but an inline did not validate, nothing is kept."""
    job = make_job(name="old")
    data = {
        "name": "new",
        "payload": "{}",
        "max_attempts": "3",
        "precision": "seconds",
        **split("due_at", job.due_at),
    }
    # No inline management forms: the formsets are invalid and the page is shown again.
    response = admin_client.post(url("job_change", job.pk), data)
    assert response.status_code == 200
    assert not response.context["adminform"].form.errors
    job.refresh_from_db()
    assert job.name == "old"


def test_a_finished_job_is_read_only(admin_client):
    job = make_job(name="done")
    services.job_cancel(job=job)
    page = admin_client.get(url("job_change", job.pk))
    assert page.status_code == 200
    assert page.context["adminform"].form.fields == {}
    assert b'name="name"' not in page.content


# --- 3. Service errors on the form, next to their field ------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"due_at": future(hours=-1)}, "due_at", "is in the past by more than the 60 s grace"),
        ({"action": "no_such_action"}, "action", "Select a valid choice"),
        (
            {
                "action": "send_email",
                "payload": json.dumps({"to": ["not-an-email"], "subject": "Hi", "body": "x"}),
            },
            "payload",
            "'not-an-email' is not a valid email address",
        ),
        (
            {"payload": json.dumps({"note": "x" * 100}), "limit": 40},
            "payload",
            "is 111 bytes; the limit is 40 bytes",
        ),
        ({"payload": "[1, 2]"}, "payload", "must be a JSON object"),
        ({"payload": "{not json"}, "payload", "Enter a valid JSON"),
        ({"max_attempts": "99"}, "max_attempts", "from 1 to 25"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "not a known time zone"),
    ],
)
def test_job_add_errors_are_shown_on_their_field(admin_client, settings, overrides, field, text):
    settings.SCHEDULES_MAX_PAYLOAD_BYTES = overrides.pop("limit", 64 * 1024)
    response = admin_client.post(url("job_add"), job_data(**overrides))
    errors = form_errors(response)
    assert any(text in message for message in errors.get(field, [])), errors
    assert text.replace("'", "&#x27;") in response.content.decode()
    assert not Job.objects.exists()


def test_rescheduling_into_the_past_is_refused_on_the_due_field(admin_client):
    job = make_job()
    response = post_form(
        admin_client,
        url("job_change", job.pk),
        {
            "name": "",
            "payload": "{}",
            "max_attempts": "3",
            "precision": "seconds",
            **split("due_at", future(hours=-2)),
        },
    )
    assert "is in the past by more than" in form_errors(response)["due_at"][0]
    assert job.steps.get().version == 1


def test_editing_a_bad_payload_is_refused_and_nothing_else_changes(admin_client):
    job = make_job("send_email", payload={"to": ["a@example.com"], "subject": "Hi", "body": "x"})
    payload = json.dumps({"to": ["nope"], "subject": "Hi", "body": "x"})
    response = post_form(
        admin_client,
        url("job_change", job.pk),
        {
            "name": "x",
            "payload": payload,
            "max_attempts": "3",
            "precision": "seconds",
            **split("due_at", future(hours=3)),
        },
    )
    assert "'nope' is not a valid email address" in form_errors(response)["payload"][0]
    job.refresh_from_db()
    # The reschedule the same form asked for was rolled back with the refused update.
    assert job.name == "" and job.steps.get().version == 1


def test_errors_on_fields_not_in_the_form_go_above_it(admin_client):
    """A job whose action was unregistered since: the service names `action`, not editable."""
    job = make_job()
    Job.objects.filter(pk=job.pk).update(action="retired_action")
    response = post_form(
        admin_client,
        url("job_change", job.pk),
        {
            "name": "renamed",
            "payload": "{}",
            "max_attempts": "3",
            "precision": "seconds",
            **split("due_at", job.due_at),
        },
    )
    errors = form_errors(response)
    assert [m for m in errors["__all__"] if m.startswith("Action: Unknown action")], errors
    assert "Unknown action" in response.content.decode()


def test_classroom_end_before_start_is_shown_on_the_end_field(admin_client):
    start = future()
    response = admin_client.post(
        url("classroom_add"), classroom_data(start, start - dt.timedelta(minutes=5))
    )
    assert form_errors(response)["end"] == ["must be after the start"]
    assert not Classroom.objects.exists()


def test_classroom_change_errors_are_shown_on_their_field(admin_client, settings):
    classroom = make_classroom(minutes=10)
    settings.SCHEDULES_MIN_PING_INTERVAL = 30
    response = post_form(
        admin_client,
        url("classroom_change", classroom.pk),
        classroom_data(classroom.start, classroom.end, live_ping_interval="10"),
    )
    assert "at least 30" in form_errors(response)["live_ping_interval"][0]


# --- 3 and 6. Help texts -------------------------------------------------------------------------


def test_action_is_a_select_of_job_actions_and_the_payload_help_is_the_chosen_ones():
    """The payload's help is the chosen action's alone (tests/schedules/test_admin_job_form.py
    has the rest: classroom actions left out, the page's schemas and script)."""
    action = JobAddForm().fields["action"]
    assert [value for value, _ in action.choices] == [
        "",
        *sorted(name for name, spec in REGISTRY.items() if spec.for_jobs),
    ]
    help_text = str(JobAddForm(initial={"action": "send_email"}).fields["payload"].help_text)
    assert "<code>to</code> (list of string, required)" in help_text
    assert "<code>subject</code> (string, required)" in help_text
    assert "<code>note</code>" not in help_text
    assert "recording_service_ref" not in help_text
    assert "<code>note</code> (string)" in str(
        JobAddForm(initial={"action": "noop"}).fields["payload"].help_text
    )


def test_help_texts_follow_the_settings_in_force(settings):
    settings.SCHEDULES_MAX_PAYLOAD_BYTES = 1234
    settings.SCHEDULES_MAX_ATTEMPTS_LIMIT = 7
    settings.SCHEDULES_PAST_GRACE = 90
    settings.SCHEDULES_ENGINES = {"seconds": "local", "relaxed": "elsewhere"}
    fields = JobAddForm().fields
    assert "at most 1234 bytes" in fields["payload"].help_text
    assert "from 1 to 7" in fields["max_attempts"].help_text
    assert "at most 90 s in the past" in fields["due_at"].help_text
    assert "now 'elsewhere'" in fields["precision"].help_text
    assert isinstance(fields["payload"], forms.JSONField)


def test_the_due_time_is_read_in_the_time_zone_typed_in(admin_client):
    """As its help text says: the form's times are read in the job's zone."""
    tokyo = ZoneInfo("Asia/Tokyo")
    due = future(days=1).replace(microsecond=0)
    data = job_data(due_at=due, time_zone="Asia/Tokyo")
    data.update({"due_at_0": due.astimezone(tokyo).strftime("%Y-%m-%d")})
    data.update({"due_at_1": due.astimezone(tokyo).strftime("%H:%M:%S")})
    response = admin_client.post(url("job_add"), data)
    assert response.status_code == 302, form_errors(response)
    job = Job.objects.get()
    assert job.due_at == due and job.time_zone == "Asia/Tokyo"
    page = admin_client.get(url("job_add"))
    assert "The date and time fields of this form are read in it" in page.content.decode()


# --- 2. Actions ----------------------------------------------------------------------------------


def run_action(client: Any, model: str, action: str, objects: list[Any]) -> Any:
    return client.post(
        url(f"{model}_changelist"),
        {"action": action, "_selected_action": [o.pk for o in objects]},
    )


def test_cancel_jobs_counts_and_reports_each_refusal(admin_client):
    jobs = [make_job(name=f"job {i}") for i in range(3)]
    services.job_cancel(job=jobs[2])
    response = run_action(admin_client, "job", "cancel_selected", jobs)
    assert response.status_code == 302
    assert messages_of(response) == [
        ("success", "2 jobs cancelled."),
        ("error", "job 2: the job is already cancelled; there is nothing to cancel"),
    ]
    assert set(Job.objects.values_list("status", flat=True)) == {PlanStatus.CANCELLED}
    assert set(Step.objects.values_list("state", flat=True)) == {StepState.CANCELLED}


def test_cancel_one_job_is_singular(admin_client):
    response = run_action(admin_client, "job", "cancel_selected", [make_job()])
    assert messages_of(response) == [("success", "1 job cancelled.")]


def test_many_refusals_are_summed_up(admin_client):
    jobs = [make_job(name=f"job {i}") for i in range(13)]
    for job in jobs:
        services.job_cancel(job=job)
    response = run_action(admin_client, "job", "cancel_selected", jobs)
    levels = [level for level, _ in messages_of(response)]
    assert levels == ["error"] * 11
    assert messages_of(response)[-1] == ("error", "3 more were refused.")


def test_an_action_on_too_many_objects_does_nothing(admin_client, monkeypatch):
    monkeypatch.setattr(schedules_admin.base, "ACTION_MAX_OBJECTS", 2)
    jobs = [make_job() for _ in range(3)]
    response = run_action(admin_client, "job", "cancel_selected", jobs)
    assert messages_of(response) == [("error", "Select at most 2 at once; nothing was done.")]
    assert set(Job.objects.values_list("status", flat=True)) == {PlanStatus.SCHEDULED}


def test_run_now_moves_the_due_time_and_reports_refusals(admin_client):
    later, done = make_job(name="later"), make_job(name="done")
    Job.objects.filter(pk=done.pk).update(status=PlanStatus.SUCCEEDED)
    Step.objects.filter(job=done).update(state=StepState.SUCCEEDED)
    before = timezone.now()
    response = run_action(admin_client, "job", "run_now", [later, done])
    assert messages_of(response) == [
        ("success", "1 job set to run now."),
        ("error", "done: the job is succeeded; only a scheduled or failed job can run now"),
    ]
    step = later.steps.get()
    assert step.due_at >= before and step.due_at <= timezone.now() and step.version == 2


def test_cancel_classrooms(admin_client):
    rooms = [make_classroom(title=f"room {i}") for i in range(3)]
    services.classroom_cancel(classroom=rooms[0])
    response = run_action(admin_client, "classroom", "cancel_selected", rooms)
    assert messages_of(response) == [
        ("success", "2 classrooms cancelled."),
        ("error", "room 0: the classroom is already cancelled; nothing to cancel"),
    ]
    assert not Step.objects.exclude(state=StepState.CANCELLED).exists()


def test_jobs_and_classrooms_are_not_deleted_from_the_admin(admin_client):
    job, classroom = make_job(), make_classroom()
    assert admin_client.get(url("job_delete", job.pk)).status_code == 403
    assert admin_client.get(url("classroom_delete", classroom.pk)).status_code == 403
    actions = admin_client.get(url("job_changelist")).context["action_form"].fields["action"]
    assert [value for value, _ in actions.choices if value] == [
        "cancel_selected",
        "run_now",
        "reschedule_selected",
        "pause_selected",
        "resume_selected",
        "clone_selected",
    ]


def test_reschedule_asks_for_the_time_then_moves_each_job(admin_client):
    jobs = [make_job(name=f"job {i}") for i in range(2)]
    done = make_job(name="done")
    Job.objects.filter(pk=done.pk).update(status=PlanStatus.SUCCEEDED)
    Step.objects.filter(job=done).update(state=StepState.SUCCEEDED)
    selection = {"action": "reschedule_selected", "_selected_action": [j.pk for j in [*jobs, done]]}
    page = admin_client.post(url("job_changelist"), selection)
    assert page.status_code == 200
    assert "Reschedule jobs" in page.content.decode()
    assert Step.objects.filter(version=1).count() == 3  # asking changed nothing
    new_due = future(hours=5).replace(microsecond=0)
    response = admin_client.post(
        url("job_changelist"), {**selection, "apply": "1", **split("due_at", new_due)}
    )
    assert response.status_code == 302
    assert messages_of(response)[0] == ("success", "2 jobs rescheduled.")
    assert messages_of(response)[1][0] == "error" and "done:" in messages_of(response)[1][1]
    for job in jobs:
        step = job.steps.get()
        assert (step.due_at, step.version) == (new_due, 2)
    assert done.steps.get().version == 1


def test_reschedule_with_a_bad_time_shows_the_form_again(admin_client):
    job = make_job()
    selection = {"action": "reschedule_selected", "_selected_action": [job.pk]}
    page = admin_client.post(url("job_changelist"), {**selection, "apply": "1", "due_at_0": "x"})
    assert page.status_code == 200
    assert page.context["form"].errors["due_at"]
    assert job.steps.get().version == 1


def test_reschedule_into_the_past_is_refused_per_job(admin_client):
    job = make_job(name="mine")
    selection = {"action": "reschedule_selected", "_selected_action": [job.pk]}
    response = admin_client.post(
        url("job_changelist"),
        {**selection, "apply": "1", **split("due_at", future(days=-2))},
    )
    [(level, text)] = messages_of(response)
    assert level == "error" and text.startswith("mine: ") and "past" in text
    assert job.steps.get().version == 1


def test_shift_moves_the_selected_classrooms(admin_client):
    room = make_classroom(title="Maths")
    start, end = room.start, room.end
    selection = {"action": "shift_selected", "_selected_action": [room.pk]}
    page = admin_client.post(
        url("classroom_changelist"), {**selection, "apply": "1", "minutes": "0"}
    )
    assert page.status_code == 200 and "must not be 0" in page.content.decode()
    response = admin_client.post(
        url("classroom_changelist"), {**selection, "apply": "1", "minutes": "90"}
    )
    assert messages_of(response) == [("success", "1 classroom moved.")]
    room.refresh_from_db()
    assert (room.start, room.end) == (
        start + dt.timedelta(minutes=90),
        end + dt.timedelta(minutes=90),
    )


def test_engine_and_last_lateness_columns(admin_client):
    job = make_job(precision=Precision.RELAXED)
    [run] = add_runs(job.steps.get(), 1)
    Run.objects.filter(pk=run.pk).update(lateness=dt.timedelta(milliseconds=250))
    room = make_classroom()
    for model, obj in (("job", job), ("classroom", room)):
        response = admin_client.get(url(f"{model}_changelist"))
        html = response.content.decode()
        assert "column-engine" in html and "column-last_lateness" in html
        [row] = [r for r in response.context["cl"].result_list if r.pk == obj.pk]
        assert row.step_engine == obj.steps.order_by("-pk").first().engine
    assert "+250 ms" in admin_client.get(url("job_changelist")).content.decode()


# --- 1. Read-only results and bounded inlines ----------------------------------------------------


def test_steps_and_runs_are_read_only(admin_client):
    job = make_job()
    step = job.steps.get()
    [run] = add_runs(step, 1)
    for model, obj in (("step", step), ("run", run)):
        assert admin_client.get(url(f"{model}_add")).status_code == 403
        assert admin_client.post(url(f"{model}_change", obj.pk), {}).status_code == 403
        assert admin_client.get(url(f"{model}_delete", obj.pk)).status_code == 403
        page = admin_client.get(url(f"{model}_change", obj.pk))
        assert page.status_code == 200 and page.context["adminform"].form.fields == {}
        changelist = admin_client.get(url(f"{model}_changelist"))
        assert not changelist.context["has_add_permission"]
        assert changelist.context["action_form"] is None  # no actions, not even delete


def test_job_page_shows_read_only_steps_and_runs_with_links(admin_client):
    job = make_job()
    step = job.steps.get()
    runs = add_runs(step, 2)
    page = admin_client.get(url("job_change", job.pk))
    html = page.content.decode()
    inlines = {i.formset.model: i for i in page.context["inline_admin_formsets"]}
    assert set(inlines) == {Step, Run}
    for inline in inlines.values():
        assert not inline.has_add_permission and not inline.has_change_permission
        assert not inline.has_delete_permission
    assert url("step_change", step.pk) in html
    assert all(url("run_change", run.pk) in html for run in runs)
    assert 'name="runs-0-status"' not in html  # shown, not editable


def test_classroom_inlines_show_the_newest_rows_and_link_to_the_rest(admin_client):
    classroom = make_classroom(minutes=60, interval=60)  # 61 steps
    runs = add_runs(classroom.steps.order_by("due_at").first(), 60)
    page = admin_client.get(url("classroom_change", classroom.pk))
    html = page.content.decode()
    inlines = {i.formset.model: i.formset for i in page.context["inline_admin_formsets"]}
    run_rows = [form.instance for form in inlines[Run].initial_forms]
    assert run_rows == runs[:20]  # newest first (runs[0] started last)
    step_rows = [form.instance for form in inlines[Step].initial_forms]
    assert step_rows == list(classroom.steps.order_by("-due_at", "-id")[:20])
    assert "Showing the 20 newest of 60 runs." in html
    assert "Showing the 20 latest due of 61 steps." in html
    link = f"{url('run_changelist')}?classroom__id__exact={classroom.pk}"
    assert link in html
    other = make_classroom(title="other")
    add_runs(other.steps.first(), 3)
    listed = admin_client.get(link).context["cl"]
    assert listed.result_count == 60 and {r.classroom_id for r in listed.result_list} == {
        classroom.pk
    }


def test_small_inlines_need_no_link(admin_client):
    job = make_job()
    add_runs(job.steps.get(), 3)
    html = admin_client.get(url("job_change", job.pk)).content.decode()
    assert "Showing the" not in html


def classroom_with_runs(count: int) -> Classroom:
    classroom = make_classroom(minutes=10, interval=60)
    steps = list(classroom.steps.all())
    per_step = -(-count // len(steps))
    made = 0
    for step in steps:
        made += len(add_runs(step, min(per_step, count - made)))
    assert Run.objects.filter(classroom=classroom).count() == count
    return classroom


def test_classroom_page_with_500_runs_stays_within_a_query_budget(
    admin_client, django_assert_max_num_queries
):
    small, big = classroom_with_runs(25), classroom_with_runs(500)
    with CaptureQueriesContext(connection) as for_small:
        assert admin_client.get(url("classroom_change", small.pk)).status_code == 200
    with django_assert_max_num_queries(10) as for_big:
        page = admin_client.get(url("classroom_change", big.pk))
    assert page.status_code == 200
    assert len(for_big.captured_queries) == len(for_small.captured_queries)
    formsets = {i.formset.model: i.formset for i in page.context["inline_admin_formsets"]}
    assert len(formsets[Run].initial_forms) == 20
    assert "Showing the 20 newest of 500 runs." in page.content.decode()


# --- 4. Changelists for a million rows -----------------------------------------------------------


def fill(model: str, count: int, owner: Any) -> None:
    """``count`` rows of the kind a changelist lists, with their foreign keys set."""
    if model == "job":
        services.job_schedule_many(
            jobs=[{"action": "noop", "due_at": future(), "name": f"job {i}"} for i in range(count)],
            owner=owner,
        )
    elif model == "classroom":
        start = future()
        Classroom.objects.bulk_create(
            Classroom(
                title=f"room {i}",
                start=start,
                end=start + dt.timedelta(hours=1),
                recording_service_ref=f"ref-{i}",
                owner=owner,
            )
            for i in range(count)
        )
    elif model == "step":
        fill("job", count, owner)
    else:
        job = make_job()
        add_runs(job.steps.get(), count)


@pytest.mark.parametrize("model", ["job", "classroom", "step", "run"])
def test_changelist_queries_do_not_grow_with_rows(
    admin_client, admin_user, django_assert_max_num_queries, model
):
    fill(model, 5, admin_user)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(url(f"{model}_changelist")).status_code == 200
    fill(model, 60, admin_user)
    with django_assert_max_num_queries(7) as many:
        response = admin_client.get(url(f"{model}_changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 50  # one page of list_per_page
    assert len(many.captured_queries) == len(few.captured_queries), [
        q["sql"] for q in many.captured_queries
    ]


@pytest.mark.parametrize("model", ["job", "classroom", "step", "run"])
def test_no_changelist_query_reads_the_whole_table(admin_client, admin_user, model):
    """Every query is a page (LIMIT), a capped count, or a lookup by key.

    More rows than a page: a list that fits one page (by its capped count) is read whole.
    """
    fill(model, 51, admin_user)
    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(url(f"{model}_changelist")).status_code == 200
    table = f"schedules_{model}"
    for query in queries.captured_queries:
        sql = query["sql"].upper()
        if f'FROM "{table.upper()}"' not in sql or "COUNT(" in sql:
            continue
        assert "DISTINCT" not in sql, sql
        assert "LIMIT" in sql or " IN (" in sql or '"ID" =' in sql, sql


def test_the_capped_count_reads_only_keys(admin_client, admin_user):
    fill("job", 3, admin_user)
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(url("job_changelist"))
    (count,) = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert "schedules_step" not in count  # no per-row annotation inside the count


def test_time_window_filters_replace_the_date_drill_down(admin_client):
    soon = make_job(due_at=future(minutes=30))
    tomorrow = make_job(due_at=future(hours=30))
    later = make_job(due_at=future(days=9))
    assert results(admin_client, "job", due="next_hour") == [soon]
    assert results(admin_client, "job", due="next_day") == [soon]
    assert set(results(admin_client, "job", due="next_week")) == {soon, tomorrow}
    assert results(admin_client, "job", due="later") == [later]
    assert results(admin_client, "step", due="later") == [later.steps.get()]
    recent, old = add_runs(soon.steps.get(), 2)
    Run.objects.filter(pk=old.pk).update(started_at=timezone.now() - dt.timedelta(days=2))
    assert results(admin_client, "run", started="past_day") == [recent]
    assert results(admin_client, "run", started="past_week") == [recent, old]


def test_a_filtered_changelist_counts_once(admin_client, admin_user):
    fill("job", 3, admin_user)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url("job_changelist"), {"status__exact": "scheduled"})
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1, counts  # no second, unfiltered count of the whole table
    assert response.context["cl"].result_count == 3


@pytest.mark.parametrize("model", ["job", "classroom", "step", "run"])
def test_changelists_never_count_past_the_cap(admin_client, admin_user, monkeypatch, model):
    from schedules.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 7)
    fill(model, 12, admin_user)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url(f"{model}_changelist"))
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 8" in sql for sql in counts), counts
    assert "more than 7 " in response.content.decode()


def test_a_list_under_the_cap_shows_its_exact_count(admin_client, admin_user):
    fill("job", 3, admin_user)
    response = admin_client.get(url("job_changelist"))
    assert "3 jobs" in response.content.decode()
    assert "more than" not in response.content.decode()


@pytest.mark.parametrize(
    ("model", "deferred"),
    [("job", {"payload"}), ("run", {"result", "error"}), ("step", {"arm_error"})],
)
def test_changelists_do_not_load_big_columns(admin_client, admin_user, model, deferred):
    fill(model, 2, admin_user)
    rows = admin_client.get(url(f"{model}_changelist")).context["cl"].result_list
    assert rows and all(deferred <= row.get_deferred_fields() for row in rows)


@pytest.mark.parametrize("model", [Job, Classroom, Step, Run])
def test_changelists_are_set_up_for_big_tables(model):
    instance = django_admin.site._registry[model]
    assert instance.show_full_result_count is False
    assert 50 <= instance.list_per_page <= 100
    indexed_first = {index.fields[0] for index in model._meta.indexes}
    # No date_hierarchy: its year list is a DISTINCT over the whole table.
    assert instance.date_hierarchy is None
    for list_filter in instance.list_filter:
        if isinstance(list_filter, type) and issubclass(list_filter, TimeWindowFilter):
            assert list_filter.field in indexed_first
    # Sorting only where an index serves it.
    sorted_on = {
        getattr(getattr(instance, name, None), "admin_order_field", name)
        for name in instance.sortable_by
    }
    assert sorted_on <= indexed_first | {"id"}
    for name in ("owner", "step", "job", "classroom"):
        if any(f.name == name for f in model._meta.fields):
            assert name in instance.raw_id_fields
    # Any foreign key read by a column is joined up front.
    fk_columns = {
        name
        for name in instance.list_display
        if isinstance(name, str)
        and any(f.name == name and f.is_relation for f in model._meta.fields)
    }
    assert fk_columns <= set(instance.list_select_related or ())


# --- 1 and 5. Columns, filters and search --------------------------------------------------------


def results(client: Any, model: str, **params: Any) -> list[Any]:
    response = client.get(url(f"{model}_changelist"), params)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_job_filters_and_search(admin_client):
    email = make_job(
        "send_email",
        name="newsletter",
        payload={"to": ["a@example.com"], "subject": "Hi", "body": "x"},
    )
    noop = make_job(name="heartbeat", precision=Precision.RELAXED)
    services.job_cancel(job=noop)
    assert results(admin_client, "job", status__exact="cancelled") == [noop]
    assert results(admin_client, "job", action__exact="send_email") == [email]
    assert results(admin_client, "job", precision__exact="relaxed") == [noop]
    assert results(admin_client, "job", q="newslet") == [email]
    assert results(admin_client, "job", q="noop") == [noop]
    assert results(admin_client, "job", q=str(noop.pk)) == [noop]
    html = admin_client.get(url("job_changelist")).content.decode()
    assert "0 / 3" in html  # attempts used / allowed


def test_classroom_filters_and_search(admin_client):
    maths = make_classroom(title="Maths", recording_service_ref="stream-abc")
    art = make_classroom(title="Art", recording_service_ref="stream-xyz")
    services.classroom_cancel(classroom=art)
    assert results(admin_client, "classroom", status__exact="cancelled") == [art]
    assert results(admin_client, "classroom", q="math") == [maths]
    assert results(admin_client, "classroom", q="xyz") == [art]


def test_step_filters_and_search_by_id(admin_client):
    job = make_job()
    step = job.steps.get()
    other = make_job().steps.get()
    Step.objects.filter(pk=step.pk).update(arm_state=ArmState.ERROR)
    Step.objects.filter(pk=other.pk).update(
        state=StepState.QUEUED, arm_state=ArmState.ARMED, engine="elsewhere"
    )
    assert results(admin_client, "step", q=str(step.pk)) == [step]
    assert results(admin_client, "step", q="not a number") == []
    assert results(admin_client, "step", state__exact="queued") == [other]
    assert results(admin_client, "step", arm_state__exact="armed") == [other]
    assert results(admin_client, "step", engine__exact="local") == [step]
    assert results(admin_client, "step", engine__exact="elsewhere") == [other]
    html = admin_client.get(url("step_changelist")).content.decode()
    for column in ("engine", "version", "arm_state", "due_at", "state", "attempts"):
        assert f"column-{column}" in html


def test_run_columns_filters_and_search(admin_client):
    step = make_job().steps.get()
    late, failed = add_runs(step, 2)
    Run.objects.filter(pk=late.pk).update(lateness=dt.timedelta(seconds=1.5))
    Run.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    assert results(admin_client, "run", status__exact="failed") == [failed]
    assert results(admin_client, "run", action__exact="noop") == [late, failed]
    assert results(admin_client, "run", q=str(step.pk)) == [late, failed]  # by step id
    html = admin_client.get(url("run_changelist")).content.decode()
    assert "+1.500 s" in html and "column-lateness_display" in html
    assert url("step_change", step.pk) in html


def test_format_lateness():
    fmt = schedules_admin.format_lateness
    assert fmt(None) == "-"
    assert fmt(dt.timedelta(milliseconds=12)) == "+12 ms"
    assert fmt(dt.timedelta(microseconds=3200)) == "+3.2 ms"
    assert fmt(dt.timedelta(microseconds=-999_400)) == "-999 ms"
    assert fmt(dt.timedelta(0)) == "+0.0 ms"
    assert fmt(dt.timedelta(seconds=-1.5)) == "-1.500 s"
    assert fmt(dt.timedelta(seconds=125)) == "+2 min 05 s"
    assert fmt(dt.timedelta(hours=1, minutes=3)) == "+1 h 03 min"


# --- 5. Steps: the engine's timer, linked to its console -----------------------------------------


class ConsoleEngine(LocalEngine):
    """The local engine with a console, as an AWS engine has."""

    def console_url(self, timer: Timer) -> str:
        return f"https://console.example/timers/{timer.external_ref}?v={timer.version}"


@pytest.fixture
def console_engine() -> Iterator[None]:
    ENGINE_ALIASES["console"] = "tests.schedules.test_admin.ConsoleEngine"
    get_engine.cache_clear()
    yield
    ENGINE_ALIASES.pop("console", None)
    get_engine.cache_clear()


def test_step_timer_links_to_the_engine_console(admin_client, console_engine):
    local = make_job().steps.get()
    remote = make_job().steps.get()
    Step.objects.filter(pk=remote.pk).update(engine="console", external_ref="arn-123")
    link = 'href="https://console.example/timers/arn-123?v=1"'
    assert link in admin_client.get(url("step_changelist")).content.decode()
    assert link in admin_client.get(url("step_change", remote.pk)).content.decode()
    local.refresh_from_db()
    assert schedules_admin.timer_link(local) == ""  # the local engine has no console
    Step.objects.filter(pk=local.pk).update(engine="gone", external_ref="ref-9")
    local.refresh_from_db()
    assert schedules_admin.timer_link(local) == "ref-9"  # an engine no longer configured


# --- Recurring and polling jobs in the admin -----------------------------------------------------


NO_RATE = {"rate_every": "", "rate_unit": ""}


def recurring_data(**overrides: Any) -> dict[str, Any]:
    data = job_data(
        **{"schedule_type": "rate", "rate_every": "5", "rate_unit": "minutes", **overrides}
    )
    for name in ("due_at_0", "due_at_1"):
        data[name] = ""
    return data


def test_adding_a_recurring_job_plans_only_its_first_occurrence(admin_client, monkeypatch):
    spy = Spy(monkeypatch, "job_schedule")
    start = future(hours=2).replace(microsecond=0)
    response = admin_client.post(url("job_add"), recurring_data(**split("starts_at", start)))
    assert response.status_code == 302, form_errors(response)
    [call] = spy.calls
    assert call["schedule_type"] == "rate" and call["rate_every"] == 5 and call["due_at"] is None
    job = Job.objects.get()
    assert (job.rate_every, job.rate_unit, job.starts_at) == (5, "minutes", start)
    [step] = job.steps.all()
    assert step.due_at == start and step.recurring


@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"schedule_type": "cron", "cron": "0 25 * * *", **NO_RATE}, "cron", "Bad hour"),
        ({"schedule_type": "cron", "cron": "0 9 * *", **NO_RATE}, "cron", "must have 5 fields"),
        ({"time_zone": "Europe/Atlantis"}, "time_zone", "not a known time zone"),
        ({"rate_every": "1", "rate_unit": "seconds", "min_rate": 5}, "rate_every", "faster than"),
        ({"ends": -1}, "ends_at", "must be after starts_at"),
        ({"rate_unit": ""}, "rate_unit", "a rate rule needs it"),
        (
            {
                "action": "http_check",
                "payload": '{"url": "http://127.0.0.1/s", "field": "a", "equals": 1}',
                "poll_interval": "10",
            },
            "poll_max_checks",
            "a poll needs a limit",
        ),
        ({"poll_interval": "10", "poll_max_checks": "3"}, "poll_interval", "does not poll"),
    ],
)
def test_bad_rules_are_shown_on_their_field_and_nothing_is_stored(
    admin_client, settings, overrides, field, text
):
    settings.SCHEDULES_MIN_RATE_SECONDS = overrides.pop("min_rate", 1)
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    start = future(hours=2)
    ends = overrides.pop("ends", None)
    if ends is not None:
        overrides.update(split("ends_at", start + dt.timedelta(hours=ends)))
    response = admin_client.post(
        url("job_add"), recurring_data(**split("starts_at", start), **overrides)
    )
    errors = form_errors(response)
    assert any(text in message for message in errors.get(field, [])), errors
    assert not Job.objects.exists() and not Step.objects.exists()


def recurring_job(**kwargs: Any) -> Job:
    options = {"schedule_type": "rate", "rate_every": 5, "rate_unit": "minutes", **kwargs}
    options.setdefault("starts_at", future(hours=2).replace(second=0, microsecond=0))
    return services.job_schedule(action="noop", **options)


def test_a_recurring_job_page_describes_its_rule_and_next_five_occurrences(admin_client):
    job = recurring_job(
        schedule_type="cron",
        rate_every=None,
        rate_unit="",
        cron="0 9 * * 1-5",
        time_zone="Europe/Paris",
    )
    html = admin_client.get(url("job_change", job.pk)).content.decode()
    assert "At 09:00 on Monday through Friday (Europe/Paris)" in html
    upcoming = job_next_occurrences(job, count=5)
    assert len(upcoming) == 5
    for when in upcoming:
        local = when.astimezone(ZoneInfo("Europe/Paris"))
        assert local.hour == 9 and local.weekday() < 5
        assert local.strftime("%a %Y-%m-%d %H:%M:%S %Z") in html
    # Its due time is its next occurrence, planned from the rule: not an input here.
    assert 'name="due_at_0"' not in html and 'name="cron"' in html


def test_the_changelist_shows_each_jobs_schedule_in_words(admin_client):
    recurring_job(max_runs=3)
    make_job()
    page = admin_client.get(url("job_changelist"))
    html = page.content.decode()
    assert "Every 5 minutes, at most 3 runs" in html and ">once<" in html


def test_changing_a_rule_in_the_admin_replans_through_job_update(admin_client, monkeypatch):
    job = recurring_job()
    old = job.steps.get()
    spy = Spy(monkeypatch, "job_update")
    data = {
        "name": "",
        "payload": "{}",
        "schedule_type": "rate",
        "rate_every": "10",
        "rate_unit": "minutes",
        "cron": "",
        "max_runs": "",
        "missed_policy": "run_once",
        "overlap_policy": "skip",
        "precision": "seconds",
        "max_attempts": "3",
        **split("starts_at", job.starts_at),
    }
    response = post_form(admin_client, url("job_change", job.pk), data)
    assert response.status_code == 302, form_errors(response)
    [call] = spy.calls
    assert {k: v for k, v in call.items() if k != "job"} == {
        "payload": None,
        "name": None,
        "max_attempts": None,
        "precision": None,
        "rate_every": 10,
    }
    old.refresh_from_db()
    assert old.state == StepState.CANCELLED
    assert job.steps.filter(state=StepState.SCHEDULED).get().due_at == job.starts_at


def test_a_polling_jobs_page_edits_its_poll_limits(admin_client, settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    job = services.job_schedule(
        action="http_check",
        due_at=future(),
        payload={"url": "http://127.0.0.1/s", "field": "state", "equals": "done"},
        poll_interval=10,
        poll_max_checks=3,
    )
    page = admin_client.get(url("job_change", job.pk))
    assert 'name="poll_max_checks"' in page.content.decode()
    data = {
        "name": "",
        "payload": json.dumps(job.payload),
        "precision": "seconds",
        "max_attempts": "3",
        "poll_interval": "10",
        "poll_max_checks": "",
        "poll_timeout": "",
        **split("due_at", job.due_at),
    }
    response = post_form(admin_client, url("job_change", job.pk), data)
    assert "a poll needs a limit" in form_errors(response)["poll_max_checks"][0]
    data["poll_timeout"] = "600"
    response = post_form(admin_client, url("job_change", job.pk), data)
    assert response.status_code == 302, form_errors(response)
    job.refresh_from_db()
    assert (job.poll_max_checks, job.poll_timeout) == (None, 600)


def test_a_recurring_job_page_with_many_occurrences_stays_within_a_query_budget(
    admin_client, django_assert_max_num_queries
):
    job = recurring_job()
    first = job.steps.get()
    Step.objects.bulk_create(
        Step(
            job=job,
            action="noop",
            sequence=k,
            due_at=first.due_at + dt.timedelta(minutes=5 * k),
            engine="local",
            state=StepState.SUCCEEDED,
            recurring=True,
        )
        for k in range(1, 400)
    )
    with django_assert_max_num_queries(12):
        page = admin_client.get(url("job_change", job.pk))
    formsets = {i.formset.model: i.formset for i in page.context["inline_admin_formsets"]}
    shown = [form.instance.sequence for form in formsets[Step].initial_forms]
    assert shown == list(range(399, 379, -1))  # the latest occurrences first
