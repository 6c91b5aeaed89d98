"""pause_job and resume_job, and --pause-after-failures on schedule_job and reschedule_job."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone

from schedules import services
from schedules.models import Job, PlanStatus, StepState

pytestmark = pytest.mark.django_db(transaction=True)


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def noop() -> Job:
    return services.job_schedule(action="noop", due_at=timezone.now() + dt.timedelta(hours=1))


def test_pause_then_resume_jobs_by_id():
    first, second = noop(), noop()
    out = run("pause_job", str(first.pk), str(second.pk), "--reason", "vendor outage")
    assert f"paused job {first.pk}" in out and f"paused job {second.pk}" in out
    for job in (first, second):
        job.refresh_from_db()
        assert job.status == PlanStatus.PAUSED and job.pause_reason == "vendor outage"
        assert job.steps.get().state == StepState.PAUSED
    assert f"job {first.pk} was already paused" in run("pause_job", str(first.pk))
    shown = run("show_job", str(first.pk))
    assert "paused" in shown and "vendor outage" in shown
    data = json.loads(run("show_job", str(first.pk), "--json"))
    assert data["status"] == "paused" and data["pause_reason"] == "vendor outage"

    out = run("resume_job", str(first.pk), str(second.pk))
    assert f"resumed job {first.pk}" in out and f"resumed job {second.pk}" in out
    first.refresh_from_db()
    assert first.status == PlanStatus.SCHEDULED
    assert first.steps.get().state == StepState.SCHEDULED
    assert f"job {first.pk} was already resumed" in run("resume_job", str(first.pk))


def test_json_output_and_refusals_naming_the_field():
    job, done = noop(), noop()
    services.job_cancel(job=done)
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("pause_job", "999999", str(done.pk), str(job.pk), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["paused"] == [job.pk] and data["unchanged"] == []
    assert [e["id"] for e in data["errors"]] == [999999, done.pk]
    assert data["errors"][1]["error"] == {"status": ["a cancelled job cannot be paused"]}
    message = str(info.value)
    assert message.startswith("2 of 3 job(s) not paused")
    assert f"job {done.pk}: status: a cancelled job cannot be paused" in message
    with pytest.raises(CommandError) as info:
        call_command("pause_job", str(noop().pk), "--reason", "x" * 501, stdout=StringIO())
    assert "reason: is 501 characters; the limit is 500" in str(info.value)

    out = StringIO()
    call_command("resume_job", str(job.pk), "--json", stdout=out)
    assert json.loads(out.getvalue()) == {"resumed": [job.pk], "unchanged": [], "errors": []}


def test_pause_after_failures_from_the_commands():
    out = run(
        "schedule_job", "--action", "noop", "--every", "1h", "--pause-after-failures", "3", "--json"
    )
    data: dict[str, Any] = json.loads(out)
    assert data["pause_after_failures"] == 3 and data["consecutive_failures"] == 0
    assert "3 failures in a row (0 so far)" in run("show_job", str(data["id"]))
    run("reschedule_job", str(data["id"]), "--pause-after-failures", "5")
    assert Job.objects.get(pk=data["id"]).pause_after_failures == 5
    run("reschedule_job", str(data["id"]), "--no-pause-after-failures")
    assert Job.objects.get(pk=data["id"]).pause_after_failures is None
    with pytest.raises(CommandError) as info:
        run("reschedule_job", str(data["id"]), "--pause-after-failures", "0")
    assert "pause_after_failures: must be a whole number from 1 to" in str(info.value)
    with pytest.raises(CommandError) as info:
        run(
            "schedule_job",
            "--action",
            "noop",
            "--due",
            (timezone.now() + dt.timedelta(hours=1)).isoformat(),
            "--pause-after-failures",
            "2",
        )
    assert "pause_after_failures: applies to a recurring job only" in str(info.value)


@pytest.mark.parametrize("name", ["pause_job", "resume_job"])
def test_help_explains_every_option_and_the_exit_status(name):
    command = load_command_class("schedules", name)
    parser = command.create_parser("manage.py", name)
    text = " ".join(parser.format_help().split())
    assert "Exit status: 0 on success; 1 on an error" in text
    for action in parser._actions:
        assert action.help, f"{name}: {action.dest} has no help"
        for option in action.option_strings:
            assert option in text, f"{name}: {option} missing from --help"
