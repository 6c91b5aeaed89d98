"""The admin as a console: times to the second in the object's zone, badges, lateness near the
front, no facet counts, and timelines."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from schedules import services, timelines
from schedules.admin.base import badge, format_lateness, zoned_time
from schedules.models import Classroom, Job, PlanStatus, Run, RunStatus, Step, StepState

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")


def url(view: str, *args: Any) -> str:
    return reverse(f"admin:schedules_{view}", args=args)


def winter_noon() -> dt.datetime:
    """A moment in the coming winter (Paris is UTC+1, "CET"), on a whole second."""
    now = timezone.now()
    year = now.year + 1 if now.month >= 2 else now.year
    return dt.datetime(year, 1, 15, 11, 0, 7, tzinfo=dt.UTC)


def paris_job(**kwargs: Any) -> Job:
    return services.job_schedule(
        action="noop", due_at=winter_noon(), time_zone="Europe/Paris", name="Paris", **kwargs
    )


def paris_classroom() -> Any:
    start = winter_noon()
    return services.classroom_create(
        title="Paris class",
        start=start,
        end=start + dt.timedelta(minutes=3),
        recording_service_ref="room-7",
        live_ping_interval=60,
        time_zone="Europe/Paris",
    )


def record_run(step: Step, *, status: str = RunStatus.SUCCEEDED, **kwargs: Any) -> Run:
    started = step.due_at + dt.timedelta(milliseconds=12)
    return Run.objects.create(
        step=step,
        job_id=step.job_id,
        classroom_id=step.classroom_id,
        execution_id=step.execution_id,
        action=step.action,
        version=step.version,
        attempt=1,
        status=status,
        due_at=step.due_at,
        started_at=started,
        finished_at=started,
        lateness=dt.timedelta(milliseconds=12),
        engine_lateness=dt.timedelta(milliseconds=12),
        engine=step.engine,
        **kwargs,
    )


# --- 1. Time ------------------------------------------------------------------------------------


def test_a_time_shows_seconds_in_the_objects_zone_with_utc_on_hover():
    html = zoned_time(winter_noon(), "Europe/Paris")
    assert f"{winter_noon().year}-01-15 12:00:07 CET" in html
    assert 'title="' in html and "11:00:07 UTC" in html
    assert zoned_time(None, "Europe/Paris") == "-"
    assert "11:00:07 UTC" in zoned_time(winter_noon(), "not/a-zone")  # shown in UTC


def test_job_and_classroom_lists_show_their_own_zone(admin_client):
    paris_job()
    paris_classroom()
    jobs = admin_client.get(url("job_changelist")).content.decode()
    assert "12:00:07 CET" in jobs and "11:00:07 UTC" in jobs
    classrooms = admin_client.get(url("classroom_changelist")).content.decode()
    assert "12:00:07 CET" in classrooms and "12:03:07 CET" in classrooms


def test_other_times_show_seconds_and_their_zone(admin_client):
    job = paris_job()
    step = job.steps.get()
    record_run(step)
    runs = admin_client.get(url("run_changelist")).content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", runs), "seconds and UTC"
    assert "a.m." not in runs and "p.m." not in runs


def test_the_change_form_shows_and_reads_times_in_the_objects_zone(admin_client):
    job = paris_job()
    page = admin_client.get(url("job_change", job.pk)).content.decode()
    assert 'value="12:00:07"' in page  # the due time's input, in Paris
    assert 'class="zone-name">Europe/Paris<' in page
    assert "11:00:07 UTC" in page  # the same moment in UTC beside it
    # Saved as typed: 12:30:00 in Paris is 11:30:00 UTC.
    change = admin_client.get(url("job_change", job.pk))
    data: dict[str, Any] = {}
    for inline in change.context["inline_admin_formsets"]:
        form = inline.formset.management_form
        data.update({form.add_prefix(k): v for k, v in form.initial.items()})
    form = change.context["adminform"].form
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name == "payload":
            data[name] = json.dumps(value or {})
        elif isinstance(value, dt.datetime):
            local = value.astimezone(PARIS)
            data[f"{name}_0"], data[f"{name}_1"] = f"{local:%Y-%m-%d}", f"{local:%H:%M:%S}"
        elif value is not None:
            data[name] = value
    data["due_at_1"] = "12:30:00"
    response = admin_client.post(url("job_change", job.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    job.refresh_from_db()
    assert job.due_at == winter_noon().replace(minute=30, second=0)


def test_the_classroom_add_form_reads_its_times_in_the_zone_typed_in(admin_client):
    start = winter_noon()
    response = admin_client.post(
        url("classroom_add"),
        {
            "title": "Paris",
            "recording_service_ref": "room-1",
            "live_ping_interval": "60",
            "time_zone": "Europe/Paris",
            "precision": "seconds",
            "start_0": f"{start.year}-01-15",
            "start_1": "12:00:07",
            "end_0": f"{start.year}-01-15",
            "end_1": "13:00:07",
        },
    )
    assert response.status_code == 302
    classroom = Classroom.objects.get()
    assert classroom.start == start and classroom.end == start + dt.timedelta(hours=1)


def test_lateness_is_signed_in_milliseconds_or_seconds():
    assert format_lateness(dt.timedelta(milliseconds=45)) == "+45 ms"
    assert format_lateness(dt.timedelta(milliseconds=-45)) == "-45 ms"
    assert format_lateness(dt.timedelta(seconds=5.166)) == "+5.166 s"


# --- 4. Lists people can scan --------------------------------------------------------------------


def test_statuses_are_badges_and_uncertain_shows_only_when_true(admin_client):
    job = paris_job()
    step = job.steps.get()
    record_run(step, uncertain=False)
    page = admin_client.get(url("run_changelist")).content.decode()
    assert '<span class="badge badge-ok">succeeded</span>' in page
    assert "icon-no.svg" not in page and "uncertain</span>" not in page
    Run.objects.update(uncertain=True, status=RunStatus.FAILED)
    page = admin_client.get(url("run_changelist")).content.decode()
    assert '<span class="badge badge-bad">failed</span>' in page
    assert "⚠ uncertain" in page
    jobs = admin_client.get(url("job_changelist")).content.decode()
    assert '<span class="badge badge-neutral">scheduled</span>' in jobs


def test_badge_tones():
    assert "badge-ok" in badge(StepState.SUCCEEDED)
    assert "badge-bad" in badge(RunStatus.ABANDONED)
    assert "badge-warn" in badge(RunStatus.RETRYING)
    assert "badge-active" in badge(StepState.RUNNING)
    assert "badge-neutral" in badge(PlanStatus.CANCELLED)


def test_lateness_comes_before_the_times_in_the_run_list(admin_client):
    record_run(paris_job().steps.get())
    page = admin_client.get(url("run_changelist")).content.decode()
    columns = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', page)
    assert columns.index("engine_lateness_display") < columns.index("started_at")
    assert columns.index("engine_lateness_display") <= 3


@pytest.mark.parametrize("model", ["job", "classroom", "step", "run", "execution"])
def test_facet_counts_are_never_offered(admin_client, model):
    page = admin_client.get(url(f"{model}_changelist"), {"_facets": "True"})
    assert page.status_code == 200
    assert "Show counts" not in page.content.decode()
    assert page.context["cl"].add_facets is False


# --- 3. Timelines --------------------------------------------------------------------------------


def test_a_classroom_timeline_has_its_steps_by_action_with_state_and_lateness(admin_client):
    classroom = paris_classroom()
    steps = list(classroom.steps.order_by("due_at"))
    record_run(steps[0])
    Step.objects.filter(pk=steps[0].pk).update(state=StepState.SUCCEEDED)
    page = admin_client.get(url("classroom_change", classroom.pk)).content.decode()
    timeline_url = url("classroom_timeline", classroom.pk)
    assert f'data-timeline-url="{timeline_url}"' in page
    assert "schedules/vendor/chart.umd.min.js" in page and "schedules/timeline.js" in page
    data = admin_client.get(timeline_url).json()
    assert data["zone"] == "Europe/Paris"
    assert data["rows"] == ["start_recording", "live_ping", "stop_recording"]
    assert len(data["points"]) == len(steps)
    first = data["points"][0]
    assert first["row"] == "start_recording" and first["state"] == "succeeded"
    assert first["lateness_ms"] == 12.0 and first["run_status"] == "succeeded"
    assert first["x"] == int(steps[0].due_at.timestamp() * 1000)
    assert first["url"] == url("step_change", steps[0].pk)
    assert data["points"][-1]["row"] == "stop_recording"


def test_a_recurring_job_timeline_has_its_occurrences_and_the_next_ones(admin_client):
    job = services.job_schedule(
        action="noop",
        schedule_type="rate",
        rate_every=5,
        rate_unit="minutes",
        starts_at=timezone.now() + dt.timedelta(minutes=1),
    )
    data = admin_client.get(url("job_timeline", job.pk)).json()
    rows = [point["row"] for point in data["points"]]
    assert rows.count("occurrences") == 1  # its pending step
    assert rows.count("next by the rule") == timelines.TIMELINE_UPCOMING - 1
    times = [point["x"] for point in data["points"]]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_a_timeline_draws_the_latest_steps_only(admin_client, monkeypatch):
    monkeypatch.setattr(timelines, "TIMELINE_STEPS", 2)
    classroom = paris_classroom()
    data = admin_client.get(url("classroom_timeline", classroom.pk)).json()
    assert data["truncated"] is True and len(data["points"]) == 2
    assert data["points"][-1]["row"] == "stop_recording"


def test_timelines_are_for_staff_only(client, admin_client):
    classroom = paris_classroom()
    assert client.get(url("classroom_timeline", classroom.pk)).status_code == 302
    assert admin_client.get(url("classroom_timeline", 999_999)).status_code == 404


def test_the_job_list_filters_by_the_actions_a_job_may_run(admin_client):
    page = admin_client.get(url("job_changelist")).content.decode()
    assert "?action__exact=send_email" in page
    assert "?action__exact=start_recording" not in page
    steps = admin_client.get(url("step_changelist")).content.decode()
    assert "?action__exact=start_recording" in steps


def test_a_clone_starts_in_the_cloned_jobs_zone(admin_client):
    job = paris_job()
    page = admin_client.get(url("job_add"), {"clone": job.pk})
    html = page.content.decode()
    assert 'value="12:00:07"' in html  # the due time as the Paris job shows it
    assert 'class="zone-name">Europe/Paris<' in html
