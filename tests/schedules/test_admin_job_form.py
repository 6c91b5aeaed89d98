"""The job form: actions a job may run, the sections and payload help of the chosen ones
(schedules/static/schedules/job_form.js and what the page gives it), and "Clone"."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from rest_framework.test import APIClient

from schedules import services
from schedules.forms import JobAddForm
from schedules.models import Job, Step
from schedules.validation import Errors
from schedules.workflow_language import definition_check
from workers.actions import REGISTRY, Scope, job_action_names

from .test_admin import form_errors, job_data, messages_of, url

pytestmark = pytest.mark.django_db

CLASSROOM_ACTIONS = ("live_ping", "start_recording", "stop_recording")
EMAIL = {"to": ["ada@example.com"], "subject": "Hello", "body": "Hi"}


def future(**delta: float) -> dt.datetime:
    return timezone.now() + dt.timedelta(**(delta or {"hours": 1}))


def page_json(content: str, element_id: str) -> Any:
    """The JSON of a ``json_script`` element of the page."""
    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', content, re.S
    )
    assert match, f"no JSON script #{element_id} in the page"
    return json.loads(match.group(1))


def textarea(content: str, name: str) -> str:
    match = re.search(rf'<textarea name="{name}"[^>]*>(.*?)</textarea>', content, re.S)
    assert match, f"no textarea {name!r}"
    return html.unescape(match.group(1))


# --- Actions a job may run -----------------------------------------------------------------------


def test_actions_say_where_they_may_be_used():
    assert {name for name, a in REGISTRY.items() if a.scope == Scope.CLASSROOM} >= set(
        CLASSROOM_ACTIONS
    )
    assert REGISTRY["workflow_wait"].scope == Scope.WORKFLOW
    assert REGISTRY["send_email"].for_jobs and REGISTRY["noop"].for_jobs
    assert job_action_names() == sorted(n for n, a in REGISTRY.items() if a.scope == Scope.JOB)


def test_the_add_form_offers_only_actions_a_job_may_run(admin_client):
    choices = [value for value, _ in JobAddForm().fields["action"].choices]
    assert choices == ["", *job_action_names()]
    assert "send_email" in choices and "http_check" in choices
    content = admin_client.get(url("job_add")).content.decode()
    for name in (*CLASSROOM_ACTIONS, "workflow_wait"):
        assert name not in choices
        assert f'<option value="{name}"' not in content


def test_a_classroom_action_posted_to_the_add_form_is_refused(admin_client):
    data = job_data(action="start_recording", payload=json.dumps({"recording_service_ref": "r"}))
    response = admin_client.post(url("job_add"), data)
    assert "Select a valid choice" in form_errors(response)["action"][0]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("action", "payload", "rule"),
    [
        ("start_recording", {"recording_service_ref": "room-1"}, "is a classroom action"),
        ("live_ping", {"recording_service_ref": "room-1"}, "is a classroom action"),
        ("workflow_wait", {}, "is run by the workflow engine itself"),
    ],
)
def test_the_service_refuses_an_action_a_job_may_not_run(action, payload, rule):
    with pytest.raises(ValidationError) as caught:
        services.job_schedule(action=action, payload=payload, due_at=future())
    [message] = caught.value.message_dict["action"]
    assert message.startswith(f"{action} {rule}")
    assert "a job cannot run it" in message and "send_email" in message
    assert not Job.objects.exists() and not Step.objects.exists()


def test_many_jobs_at_once_refuse_a_classroom_action_by_its_index():
    with pytest.raises(ValidationError) as caught:
        services.job_schedule_many(
            jobs=[
                {"action": "noop", "due_at": future()},
                {"action": "stop_recording", "payload": {"recording_service_ref": "r"}},
            ]
        )
    assert "is a classroom action" in caught.value.message_dict["jobs[1].action"][0]
    assert not Job.objects.exists()


def test_the_api_refuses_a_classroom_action_naming_the_field_and_the_rule():
    client = APIClient()
    client.force_authenticate(User.objects.create_user("alice", password="pw-alice-1234"))
    body = {
        "action": "start_recording",
        "payload": {"recording_service_ref": "room-1"},
        "due_at": future().isoformat(),
    }
    response = client.post("/api/jobs/", body, format="json")
    assert response.status_code == 400, response.json()
    assert "is a classroom action" in response.json()["action"][0]
    assert not Job.objects.exists()


def test_a_workflow_task_runs_what_a_job_may_run():
    definition = {
        "StartAt": "Record",
        "States": {
            "Record": {
                "Type": "Task",
                "Action": "start_recording",
                "Payload": {"recording_service_ref": "room-1"},
                "End": True,
            }
        },
    }
    errors = Errors()
    definition_check(errors, definition)
    [message] = errors.by_field["definition"]
    assert message.startswith("States.Record.Action: start_recording is a classroom action")
    assert "a Task cannot run it" in message
    definition["States"]["Record"].update(Action="noop", Payload={"note": "x"})
    errors = Errors()
    definition_check(errors, definition)
    assert not errors.by_field


# --- The page: sections, the script and each action's schema and help ---------------------------


def test_the_add_page_carries_the_script_and_each_actions_schema_and_help(admin_client):
    content = admin_client.get(url("job_add")).content.decode()
    assert "schedules/job_form.js" in content
    data = page_json(content, "id_payload_actions")
    assert sorted(data) == job_action_names()
    for name, entry in data.items():
        spec = REGISTRY[name]
        assert entry["schema"] == spec.payload_model.model_json_schema()
        assert entry["polls"] == spec.polls
        assert f"<code>{name}</code>" in entry["help"]
        assert escape(spec.description) in entry["help"]
    assert "<code>to</code> (list of string, required)" in data["send_email"]["help"]
    assert 'data-payload-actions="id_payload_actions"' in content
    # No inline script: each one is a file or JSON data.
    for tag in re.findall(r"<script\b[^>]*>", content):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_the_payload_help_is_the_chosen_actions_alone(admin_client):
    content = admin_client.get(url("job_add")).content.decode()
    help_text = re.search(r'id="id_payload_helptext">(.*?)</div>\s*</div>', content, re.S)
    assert help_text and "Choose an action to see the keys of its payload." in help_text.group(1)
    assert "(list of string, required)" not in help_text.group(1)
    response = admin_client.post(url("job_add"), job_data(action="send_email", payload="{}"))
    help_text = str(response.context["adminform"].form.fields["payload"].help_text)
    assert "<code>send_email</code>" in help_text and "<code>subject</code>" in help_text
    assert "<code>note</code>" not in help_text and "http_check" not in help_text


def test_the_add_page_marks_each_section_with_its_schedule_type_or_polling(admin_client):
    content = admin_client.get(url("job_add")).content.decode()
    classes = re.findall(r'<fieldset class="module aligned ([^"]*)"', content)
    assert "schedule-once" in classes
    assert "schedule-rate" in classes and "schedule-cron" in classes
    assert classes.count("schedule-rate schedule-cron") == 2  # the rule's window, policies
    assert "action-polls" in classes


def test_a_change_page_checks_the_payload_against_its_own_action(admin_client, settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1"]
    job = services.job_schedule(
        action="http_check",
        due_at=future(),
        payload={"url": "http://127.0.0.1/s", "field": "state", "equals": "done"},
        poll_interval=10,
        poll_max_checks=3,
    )
    content = admin_client.get(url("job_change", job.pk)).content.decode()
    assert "schedules/job_form.js" in content and 'data-action="http_check"' in content
    assert list(page_json(content, "id_payload_actions")) == ["http_check"]
    assert '<fieldset class="module aligned action-polls"' in content


def test_a_finished_recurring_job_shows_only_its_own_rule(admin_client):
    job = services.job_schedule(
        action="noop", schedule_type="rate", rate_every=5, rate_unit="minutes"
    )
    headings = re.compile(r'class="fieldset-heading">([^<]*)<')
    content = admin_client.get(url("job_change", job.pk)).content.decode()
    assert {"Rate rule", "Cron rule"} <= set(headings.findall(content))  # the type may change
    services.job_cancel(job=job)
    content = admin_client.get(url("job_change", job.pk)).content.decode()
    assert "Rate rule" in headings.findall(content)
    assert "Cron rule" not in headings.findall(content)


def test_the_sections_the_script_hides_are_not_needed(admin_client):
    """The script disables hidden fieldsets, so the browser does not send their fields:
    a one-off job comes without its policies, a rate job without a due time."""
    data = job_data()
    for name in ("missed_policy", "overlap_policy"):
        del data[name]
    response = admin_client.post(url("job_add"), data)
    assert response.status_code == 302, form_errors(response)
    job = Job.objects.get()
    assert (job.missed_policy, job.overlap_policy) == ("run_once", "skip")
    data = job_data(schedule_type="rate", rate_every="5", rate_unit="minutes", name="rate")
    del data["due_at_0"], data["due_at_1"]
    response = admin_client.post(url("job_add"), data)
    assert response.status_code == 302, form_errors(response)
    assert Job.objects.get(name="rate").rate_every == 5


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"to": ["ada@example.com"], "body": "Hi"}, "subject: Field required"),
        ({**EMAIL, "to": "ada@example.com"}, "to: Input should be a valid list"),
        ({**EMAIL, "to": ["ada@example.com", "nope"]}, "to.1: 'nope' is not a valid email"),
        ({**EMAIL, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_a_payload_error_names_the_key_and_the_rule(admin_client, payload, text):
    response = admin_client.post(
        url("job_add"), job_data(action="send_email", payload=json.dumps(payload))
    )
    errors = form_errors(response)["payload"]
    assert any(message.startswith(text) for message in errors), errors
    assert not Job.objects.exists()


# --- Clone -------------------------------------------------------------------------------------


@pytest.fixture
def hosts(settings: Any) -> None:
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["127.0.0.1", "hooks.example.com"]


def one_off_job() -> Job:
    return services.job_schedule(
        action="send_email",
        name="Welcome",
        payload={**EMAIL, "subject": "Grüße — ünïcode", "context": {"nested": [1, {"a": None}]}},
        due_at=future(hours=3).replace(microsecond=0),
        time_zone="Europe/Paris",
        precision="relaxed",
        max_attempts=5,
        webhook_url="https://hooks.example.com/jobs",
    )


def recurring_job() -> Job:
    start = future(hours=1).replace(microsecond=0)
    return services.job_schedule(
        action="http_check",
        name="Watch",
        payload={"url": "http://127.0.0.1/s", "field": "state", "equals": "done"},
        schedule_type="rate",
        rate_every=15,
        rate_unit="minutes",
        starts_at=start,
        ends_at=start + dt.timedelta(days=2),
        max_runs=40,
        missed_policy="skip",
        overlap_policy="allow",
        poll_interval=30,
        poll_max_checks=4,
        poll_timeout=600,
        time_zone="America/New_York",
        max_attempts=2,
    )


def expected_initial(job: Job) -> dict[str, Any]:
    fields = (
        "action",
        "payload",
        "time_zone",
        "precision",
        "max_attempts",
        "webhook_url",
        "schedule_type",
        "rate_every",
        "rate_unit",
        "cron",
        "starts_at",
        "ends_at",
        "max_runs",
        "missed_policy",
        "overlap_policy",
        "poll_interval",
        "poll_max_checks",
        "poll_timeout",
    )
    expected = {name: getattr(job, name) for name in fields}
    expected["name"] = f"{job.name} (copy)"
    expected["due_at"] = None if job.is_recurring else job.due_at
    return expected


def form_values(response: Any, names: Any) -> dict[str, Any]:
    """What each field of the shown add form starts with."""
    form = response.context["adminform"].form
    return {name: form[name].value() if name in form.fields else None for name in names}


@pytest.mark.parametrize("make", [one_off_job, recurring_job])
def test_the_clone_link_opens_the_add_form_prefilled_and_saves_nothing(admin_client, hosts, make):
    job = make()
    content = admin_client.get(url("job_change", job.pk)).content.decode()
    link = re.search(r'<a href="([^"]+)" class="clonelink">Clone</a>', content)
    assert link, "no Clone link in the object tools"
    jobs, steps = Job.objects.count(), Step.objects.count()
    response = admin_client.get(html.unescape(link.group(1)), follow=True)
    assert response.status_code == 200 and response.context["add"]
    expected = expected_initial(job)
    initial = response.context["adminform"].form.initial
    assert {name: initial.get(name) for name in expected} == expected
    # The payload box shows the same JSON (a round trip, not a string of a string).
    assert json.loads(textarea(response.content.decode(), "payload")) == job.payload
    assert (Job.objects.count(), Step.objects.count()) == (jobs, steps)


def test_the_clone_action_opens_the_add_form_for_one_selected_job(admin_client, hosts):
    job = recurring_job()
    jobs, steps = Job.objects.count(), Step.objects.count()
    response = admin_client.post(
        url("job_changelist"),
        {"action": "clone_selected", "_selected_action": [job.pk]},
        follow=True,
    )
    [(path, status)] = response.redirect_chain
    assert status == 302 and path == f"{reverse('admin:schedules_job_add')}?clone={job.pk}"
    assert form_values(response, ["name", "rate_every", "poll_timeout"]) == {
        "name": "Watch (copy)",
        "rate_every": 15,
        "poll_timeout": 600,
    }
    assert (Job.objects.count(), Step.objects.count()) == (jobs, steps)


def test_the_clone_action_refuses_more_than_one_job(admin_client):
    first = services.job_schedule(action="noop", due_at=future())
    second = services.job_schedule(action="noop", due_at=future())
    response = admin_client.post(
        url("job_changelist"),
        {"action": "clone_selected", "_selected_action": [first.pk, second.pk]},
    )
    assert response.status_code == 302 and response["Location"].startswith(url("job_changelist"))
    [(level, message)] = messages_of(response)
    assert level == "error" and message.startswith("Select exactly one job to clone")
    assert Job.objects.count() == 2


def test_a_cloned_job_saved_from_the_add_form_is_a_new_job(admin_client, hosts):
    job = one_off_job()
    data = job_data(
        due_at=future(hours=3),
        name="Welcome (copy)",
        action=job.action,
        payload=json.dumps(job.payload),
        time_zone=job.time_zone,
        precision=job.precision,
        max_attempts=str(job.max_attempts),
        webhook_url=job.webhook_url,
    )
    response = admin_client.post(f"{url('job_add')}?clone={job.pk}", data)
    assert response.status_code == 302, form_errors(response)
    copy = Job.objects.exclude(pk=job.pk).get()
    assert (copy.name, copy.action, copy.payload) == ("Welcome (copy)", job.action, job.payload)
    job.refresh_from_db()
    assert job.name == "Welcome"


def test_a_clone_of_a_missing_job_opens_an_empty_form(admin_client):
    response = admin_client.get(f"{url('job_add')}?clone=999999")
    assert response.status_code == 200
    assert not response.context["adminform"].form.initial.get("name")
    assert any("No job with id '999999' to copy" in m for _, m in messages_of(response))


def test_the_add_form_reads_a_json_payload_and_times_from_its_query(admin_client):
    response = admin_client.get(
        url("job_add"),
        {"action": "noop", "payload": '{"note": "ça"}', "due_at": "2030-01-02T03:04:05+00:00"},
    )
    initial = response.context["adminform"].form.initial
    assert initial["payload"] == {"note": "ça"}
    assert initial["due_at"] == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
