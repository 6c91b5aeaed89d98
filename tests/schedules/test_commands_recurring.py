"""The job commands with recurring and polling jobs: rules in, rules out, bad rules refused."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from schedules import services
from schedules.models import Job, Step, StepState

from .test_commands import run, run_json

pytestmark = pytest.mark.django_db(transaction=True)


def start() -> dt.datetime:
    return (timezone.now() + dt.timedelta(hours=1)).replace(microsecond=0)


def test_schedule_job_every_five_minutes_with_bounds():
    first = start()
    data = run_json(
        "schedule_job",
        "--action",
        "noop",
        "--every",
        "5m",
        "--starts",
        first.isoformat(),
        "--max-runs",
        "3",
        "--missed",
        "skip",
        "--overlap",
        "allow",
    )
    assert data["schedule"] == "Every 5 minutes, at most 3 runs"
    assert (data["rate_every"], data["rate_unit"], data["max_runs"]) == (5, "minutes", 3)
    assert (data["missed_policy"], data["overlap_policy"]) == ("skip", "allow")
    assert [dt.datetime.fromisoformat(t) for t in data["next_occurrences"]] == [
        first + dt.timedelta(minutes=5 * k) for k in range(3)
    ]
    (step,) = data["steps"]  # one timer: the next occurrence
    assert step["due_at"] == first.isoformat()


def test_schedule_email_by_cron_in_a_zone():
    job_id = int(
        run(
            "schedule_email",
            "--to",
            "team@example.com",
            "--subject",
            "Standup",
            "--body",
            "In five minutes.",
            "--cron",
            "55 8 * * 1-5",
            "--time-zone",
            "Europe/Paris",
        )
    )
    job = Job.objects.get(pk=job_id)
    assert job.schedule_type == "cron" and job.action == "send_email"
    local = job.due_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (8, 55) and local.weekday() < 5


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--every", "5 fortnights"], "every: '5 fortnights' is not a rate"),
        (["--every", "soon"], "every: 'soon' is not a rate"),
        (["--cron", "61 * * * *"], "cron: cannot be read: Bad minute"),
        (["--cron", "0 9 * * *", "--time-zone", "Europe/Nowhere"], "time_zone: 'Europe/Nowhere'"),
        (["--every", "1 hour", "--ends", "2020-01-01T00:00:00Z"], "ends_at: must be after"),
        (["--every", "1 hour", "--starts", "2030-01-01T09:00:00"], "starts_at: a time zone is"),
        (["--every", "1s", "--min-rate", "5"], "rate_every: every 1 seconds is faster than"),
        (["--due", "in-an-hour", "--poll-interval", "5"], "poll_interval: noop never reports"),
    ],
)
def test_bad_rules_are_refused_naming_the_field_and_nothing_is_stored(settings, args, text):
    if "--min-rate" in args:
        i = args.index("--min-rate")
        settings.SCHEDULES_MIN_RATE_SECONDS = float(args[i + 1])
        args = args[:i] + args[i + 2 :]
    args = [start().isoformat() if a == "in-an-hour" else a for a in args]
    with pytest.raises(CommandError) as caught:
        run("schedule_job", "--action", "noop", *args)
    assert text in str(caught.value)
    assert not Job.objects.exists()


def test_a_rule_and_a_due_time_are_exclusive():
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("schedule_job", "--action", "noop", "--due", start().isoformat(), "--every", "5m")


def test_a_polling_job_from_the_shell(settings):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["status.example.com"]
    payload = '{"url": "https://status.example.com/t/1", "field": "state", "equals": "done"}'
    base = ["schedule_job", "--action", "http_check", "--payload", payload]
    base += ["--due", start().isoformat(), "--poll-interval", "30"]
    with pytest.raises(CommandError, match="poll_max_checks: a poll needs a limit"):
        run(*base)
    data = run_json(*base, "--poll-timeout", "3600")
    assert (data["poll_interval"], data["poll_max_checks"], data["poll_timeout"]) == (
        30,
        None,
        3600,
    )


def recurring() -> Job:
    return services.job_schedule(
        action="noop", schedule_type="rate", rate_every=1, rate_unit="hours", starts_at=start()
    )


def test_reschedule_job_changes_a_recurring_jobs_rule():
    job = recurring()
    old = job.steps.get()
    text = run("reschedule_job", str(job.pk), "--cron", "30 6 * * *")
    assert "At 06:30" in text
    old.refresh_from_db()
    assert old.state == StepState.CANCELLED
    job.refresh_from_db()
    assert (job.schedule_type, job.cron, job.rate_every, job.rate_unit) == (
        "cron",
        "30 6 * * *",
        None,
        "",
    )
    new = Step.objects.get(job=job, state=StepState.SCHEDULED)
    assert (new.due_at.hour, new.due_at.minute) == (6, 30)
    ends = (timezone.now() + dt.timedelta(days=3)).isoformat()
    assert run_json("reschedule_job", str(job.pk), "--ends", ends)["ends_at"] is not None
    assert run_json("reschedule_job", str(job.pk), "--no-end")["ends_at"] is None


def test_reschedule_job_refuses_a_due_time_for_a_recurring_job_and_says_what_to_do():
    job = recurring()
    with pytest.raises(CommandError, match="a recurring job's times come from its rule"):
        run("reschedule_job", str(job.pk), "--due", start().isoformat())
    with pytest.raises(CommandError, match="Give --due for a one-off job, or a rule change"):
        run("reschedule_job", str(job.pk))
    assert job.steps.get().version == 1


def test_list_and_show_a_recurring_job():
    job = recurring()
    one_off = services.job_schedule(action="noop", due_at=start())
    assert [j["id"] for j in run_json("list_jobs", "--schedule-type", "rate")["jobs"]] == [job.pk]
    rows = run("list_jobs").splitlines()
    assert any("Every hour" in row and row.split()[0] == str(job.pk) for row in rows)
    assert any(" once " in row and row.split()[0] == str(one_off.pk) for row in rows)
    text = run("show_job", str(job.pk))
    assert "schedule        Every hour" in text
    assert "missed_policy   run_once" in text and "overlap_policy  skip" in text
    next_line = next(line for line in text.splitlines() if line.strip().startswith("next"))
    assert next_line.count("UTC") == 5
