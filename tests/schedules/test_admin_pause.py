"""Pause and resume in the admin: the list actions (counts, plurals, refusals), the Pause and
Resume button on the change page, the status shown and filtered, and pause_after_failures
in the job form."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from schedules import services
from schedules.models import Job, PlanStatus, StepState
from tests.schedules.test_admin import (
    form_errors,
    future,
    make_classroom,
    make_job,
    messages_of,
    recurring_data,
    run_action,
    split,
    url,
)

pytestmark = pytest.mark.django_db


def pause_action(client: Client, model: str, objects: list, reason: str = "") -> object:
    """Choose "Pause selected", then submit its intermediate page with ``reason``."""
    return client.post(
        url(f"{model}_changelist"),
        {
            "action": "pause_selected",
            "_selected_action": [o.pk for o in objects],
            "apply": "Pause",
            "reason": reason,
        },
    )


def test_pause_selected_counts_what_it_paused_and_reports_each_refusal(admin_client):
    jobs = [make_job(name=f"job {i}") for i in range(4)]
    services.job_pause(job=jobs[1], reason="before")
    services.job_cancel(job=jobs[3])
    page = run_action(admin_client, "job", "pause_selected", jobs)
    assert page.status_code == 200  # first, the page asking for the reason
    assert page.context["title"] == "Pause jobs" and "reason" in page.context["form"].fields
    assert set(Job.objects.values_list("status", flat=True)) != {PlanStatus.PAUSED}
    response = pause_action(admin_client, "job", jobs)
    assert response.status_code == 302
    assert messages_of(response) == [
        ("success", "2 jobs paused; 1 was already paused."),
        ("error", "job 3: a cancelled job cannot be paused"),
    ]
    statuses = dict(Job.objects.values_list("name", "status"))
    assert statuses == {
        "job 0": PlanStatus.PAUSED,
        "job 1": PlanStatus.PAUSED,
        "job 2": PlanStatus.PAUSED,
        "job 3": PlanStatus.CANCELLED,
    }
    assert Job.objects.get(name="job 0").pause_reason == "paused in the admin by admin"
    assert Job.objects.get(name="job 1").pause_reason == "before"


def test_resume_selected_is_singular_for_one_and_says_what_was_not_paused(admin_client):
    paused, scheduled = make_job(name="paused"), make_job(name="scheduled")
    services.job_pause(job=paused)
    response = run_action(admin_client, "job", "resume_selected", [paused])
    assert messages_of(response) == [("success", "1 job resumed.")]
    response = run_action(admin_client, "job", "resume_selected", [paused, scheduled])
    assert messages_of(response)[-1] == ("success", "2 jobs were not paused.")
    assert paused.steps.get().state == StepState.SCHEDULED


def test_classroom_actions(admin_client):
    rooms = [make_classroom(title=f"room {i}") for i in range(2)]
    response = pause_action(admin_client, "classroom", rooms)
    assert messages_of(response) == [("success", "2 classrooms paused.")]
    assert {s.state for room in rooms for s in room.steps.all()} == {StepState.PAUSED}
    response = run_action(admin_client, "classroom", "resume_selected", rooms[:1])
    assert messages_of(response)[-1] == ("success", "1 classroom resumed.")
    response = pause_action(admin_client, "classroom", rooms)
    assert messages_of(response)[-1] == ("success", "1 classroom paused; 1 was already paused.")


def test_the_reason_given_is_kept_after_who_paused_and_a_long_one_is_refused(admin_client):
    job, room = make_job(name="mailer"), make_classroom()
    pause_action(admin_client, "job", [job], reason="  vendor down  ")
    pause_action(admin_client, "classroom", [room], reason="teacher ill")
    job.refresh_from_db()
    room.refresh_from_db()
    assert job.pause_reason == "paused in the admin by admin: vendor down"
    assert room.pause_reason == "paused in the admin by admin: teacher ill"

    other = make_job(name="other")
    page = pause_action(admin_client, "job", [other], reason="x" * 400)
    assert page.status_code == 200  # the page again, with the error on the field
    assert page.context["form"].errors == {
        "reason": ["Ensure this value has at most 325 characters (it has 400)."]
    }
    other.refresh_from_db()
    assert other.status == PlanStatus.SCHEDULED and other.pause_reason == ""


def test_the_actions_are_offered_with_their_model_s_name(admin_client):
    for model, plural in (("job", "jobs"), ("classroom", "classrooms")):
        page = admin_client.get(url(f"{model}_changelist"))
        choices = dict(page.context["action_form"].fields["action"].choices)
        assert choices["pause_selected"] == f"Pause selected {plural}"
        assert choices["resume_selected"] == f"Resume selected {plural}"


def button(content: str) -> tuple[str, str, str] | None:
    """The Pause link or the Resume button of a change page: (URL, label, help)."""
    match = re.search(
        r'<a href="([^"]+)" class="pauselink" title="([^"]+)">(\w+)</a>', content
    ) or re.search(
        r'<form method="post" action="([^"]+)" class="pause-form">.*?'
        r'<button type="submit" class="pauselink" title="([^"]+)">(\w+)</button>',
        content,
        re.S,
    )
    if match is None:
        return None
    return html.unescape(match.group(1)), match.group(3), html.unescape(match.group(2))


@pytest.mark.parametrize("model", ["job", "classroom"])
def test_the_change_page_button_pauses_then_resumes(admin_client, model):
    obj = make_job() if model == "job" else make_classroom()
    page = admin_client.get(url(f"{model}_change", obj.pk)).content.decode()
    action, label, help_text = button(page) or ("", "", "")
    assert (action, label) == (url(f"{model}_pause", obj.pk), "Pause")
    assert "held and their timers disarmed" in help_text and "running finishes" in help_text
    form_page = admin_client.get(action)  # the link: the page asking for the reason
    assert form_page.status_code == 200 and form_page.context["title"] == f"Pause {obj}"
    assert 'name="reason"' in form_page.content.decode()
    obj.refresh_from_db()
    assert obj.status == PlanStatus.SCHEDULED  # nothing paused by looking
    response = admin_client.post(action, {"reason": ""})
    assert response.status_code == 302 and response.url == url(f"{model}_change", obj.pk)
    assert messages_of(response) == [("success", f"{obj}: paused.")]
    obj.refresh_from_db()
    assert obj.status == PlanStatus.PAUSED and obj.pause_reason == "paused in the admin by admin"

    page = admin_client.get(url(f"{model}_change", obj.pk)).content.decode()
    assert "paused in the admin by admin" in page  # the reason, on the page
    assert "Resume arms" in page or "Resume drops" in page  # the section's help
    action, label, help_text = button(page) or ("", "", "")
    assert (action, label) == (url(f"{model}_resume", obj.pk), "Resume")
    assert help_text.startswith("Resume: only the next run is armed again")
    response = admin_client.post(action)
    assert messages_of(response)[-1] == ("success", f"{obj}: resumed.")
    obj.refresh_from_db()
    assert obj.status == PlanStatus.SCHEDULED


def test_the_buttons_need_the_change_permission_and_resume_a_post(admin_client):
    job = make_job()
    assert admin_client.get(url("job_resume", job.pk)).status_code == 405
    viewer = User.objects.create_user("viewer", password="pw-viewer-1234", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(viewer)
    page = client.get(url("job_change", job.pk)).content.decode()
    assert button(page) is None  # only who may change the job sees it
    assert client.get(url("job_pause", job.pk)).status_code == 403
    assert client.post(url("job_pause", job.pk)).status_code == 403
    job.refresh_from_db()
    assert job.status == PlanStatus.SCHEDULED


def test_an_ended_job_has_no_button_and_a_refusal_is_a_message(admin_client):
    job = make_job()
    services.job_cancel(job=job)
    assert button(admin_client.get(url("job_change", job.pk)).content.decode()) is None
    response = admin_client.post(url("job_pause", job.pk))
    assert messages_of(response) == [("error", f"{job}: a cancelled job cannot be paused")]


def test_paused_shows_in_the_list_with_its_reason_and_filters(admin_client):
    paused = make_job(name="held one")
    make_job(name="other one")
    services.job_pause(job=paused, reason="vendor down")
    page = admin_client.get(url("job_changelist"), {"status__exact": "paused"})
    content = page.content.decode()
    assert "held one" in content and "other one" not in content
    assert '<span class="badge badge-warn" title="vendor down">paused ⓘ</span>' in content
    filters = admin_client.get(url("job_changelist")).content.decode()
    assert "?status__exact=paused" in filters


def test_pause_after_failures_in_the_job_form(admin_client):
    start = future(hours=2).replace(microsecond=0)
    data = recurring_data(**split("starts_at", start), pause_after_failures="0")
    errors = form_errors(admin_client.post(url("job_add"), data))
    assert "pause_after_failures" in errors
    data["pause_after_failures"] = "3"
    response = admin_client.post(url("job_add"), data)
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.pause_after_failures == 3
    page = admin_client.get(url("job_change", job.pk)).content.decode()
    assert 'name="pause_after_failures"' in page and "failed occurrences in a row" in page
