"""The docs stay true: every setting documented, README's commands as .ci/run uses them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def settings_variables() -> set[str]:
    source = (ROOT / "scheduler_project" / "settings.py").read_text()
    return set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', source))


def test_settings_read_variables():
    assert {"DATABASE_URL", "SECRET_KEY", "SCHEDULES_ENGINE_SECONDS"} <= settings_variables()


def test_every_variable_is_documented_with_its_default():
    docs = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", docs, re.M))
    assert settings_variables() - documented == set()


def test_every_variable_is_in_env_example():
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# ([A-Z_]+)=", example, re.M))
    assert settings_variables() - listed == set()


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.+?)\n```", readme)
    assert len(commands) == 2, commands
    run, test = commands
    assert "manage.py run_stack" in run
    assert test in (ROOT / ".ci" / "run").read_text()


def api_example(index: int) -> dict[str, object]:
    """The names defined by the index-th Python example of docs/api.md."""
    source = (ROOT / "docs" / "api.md").read_text()
    examples = re.findall(r"```python\n(.+?)\n```", source, re.S)
    assert len(examples) == 2
    namespace: dict[str, object] = {}
    exec(compile(examples[index], "docs/api.md", "exec"), namespace)
    return namespace


def test_the_in_app_api_example_schedules_and_cancels_an_email(django_user_model):
    from django.test import RequestFactory

    from schedules.models import Job, PlanStatus

    namespace = api_example(0)
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    request = RequestFactory().post("/remind-me/")
    request.user = user

    created = namespace["remind_me"](request)  # type: ignore[operator]
    assert created.status_code == 201
    job = Job.objects.get(owner=user)
    assert job.action == "send_email" and job.payload["to"] == ["ada@example.com"]

    cancelled = namespace["cancel_reminder"](request, job.pk)  # type: ignore[operator]
    assert cancelled.status_code == 200
    job.refresh_from_db()
    assert job.status == PlanStatus.CANCELLED
    assert namespace["cancel_reminder"](request, job.pk).status_code == 409  # type: ignore[operator]

    user.email = "not an address"
    assert namespace["remind_me"](request).status_code == 400  # type: ignore[operator]


def test_the_in_app_api_example_of_recurring_and_polling_jobs(django_user_model, settings):
    from zoneinfo import ZoneInfo

    from schedules.selectors import job_next_occurrences

    namespace = api_example(1)
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    report = namespace["weekly_report"](user)  # type: ignore[operator]
    assert report.schedule_type == "cron" and report.max_runs == 10
    mondays = job_next_occurrences(report, count=3)
    for when in mondays:
        local = when.astimezone(ZoneInfo("Europe/Paris"))
        assert (local.weekday(), local.hour, local.minute) == (0, 8, 0)
    assert report.steps.count() == 1  # one timer: the next Monday

    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["exports.example.com"]
    url = "https://exports.example.com/exports/7"
    export = namespace["wait_for_export"](user, url)  # type: ignore[operator]
    assert (export.poll_interval, export.poll_timeout, export.payload["url"]) == (60, 3600, url)
