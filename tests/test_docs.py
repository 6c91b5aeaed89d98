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
