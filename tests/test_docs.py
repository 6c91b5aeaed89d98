"""The docs stay true: every setting documented, README's commands as .ci/run uses them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def settings_variables() -> set[str]:
    source = (ROOT / "scheduler_project" / "settings.py").read_text()
    return set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', source))


def test_settings_read_variables():
    assert {"DATABASE_URL", "SECRET_KEY", "SCHEDULES_ENGINE_PRECISE"} <= settings_variables()


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


def test_the_in_app_api_example_schedules_and_cancels_an_email(django_user_model):
    from django.test import RequestFactory

    from schedules.models import Job, PlanStatus

    source = (ROOT / "docs" / "api.md").read_text()
    (example,) = re.findall(r"```python\n(.+?)\n```", source, re.S)
    namespace: dict[str, object] = {}
    exec(compile(example, "docs/api.md", "exec"), namespace)
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
