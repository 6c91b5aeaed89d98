"""save_workflow: a definition file saved as a new workflow or its next version."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from schedules.models import Workflow

pytestmark = pytest.mark.django_db

SEED = Path(__file__).resolve().parents[2] / "examples/workflows/database_migration.json"


def run(*args: str) -> str:
    out = StringIO()
    call_command("save_workflow", *args, stdout=out)
    return out.getvalue()


def test_the_shipped_seed_002_file_saves_and_a_change_is_the_next_version(settings, tmp_path):
    settings.SCHEDULES_HTTP_CHECK_ALLOWED_HOSTS = ["migrations.internal"]
    assert run("database-migration", str(SEED)).strip() == "database-migration v1"
    assert run("database-migration", str(SEED)).strip() == "database-migration v1"  # unchanged
    changed: dict[str, Any] = json.loads(SEED.read_text())
    changed["States"]["WaitForMigration"]["Seconds"] = 30
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    out = json.loads(run("database-migration", str(path), "--json"))
    assert out == {
        "id": Workflow.objects.get().pk,
        "name": "database-migration",
        "version": 2,
        "created": False,
    }
    assert Workflow.objects.get().versions.count() == 2


def test_a_refused_definition_names_each_state_and_saves_nothing(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": []}}})
    )
    with pytest.raises(CommandError) as caught:
        run("broken", str(path))
    message = str(caught.value)
    assert message.startswith("The workflow was not saved; nothing was stored:")
    assert "definition: States.A.Choices: required" in message
    assert "definition: States.A.Default: required" in message
    assert not Workflow.objects.exists()


def test_a_file_that_is_not_json_or_not_there(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(CommandError, match="definition: not valid JSON"):
        run("x", str(path))
    with pytest.raises(CommandError, match="definition: cannot read"):
        run("x", str(tmp_path / "missing.json"))


def command(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def ping() -> Workflow:
    from schedules import services
    from tests.schedules.test_services_workflows import definition

    return services.workflow_create(name="ping", definition=definition())


def test_start_list_and_show_an_execution(ping):
    from schedules import services
    from schedules.models import Execution

    started = json.loads(
        command(
            "start_workflow", "ping", "--input", '{"env": "prod"}', "--start-key", "k1", "--json"
        )
    )
    assert (started["status"], started["state"], started["created"]) == ("running", "Ping", True)
    again = json.loads(command("start_workflow", "ping", "--start-key", "k1", "--json"))
    assert again["id"] == started["id"] and again["created"] is False
    with pytest.raises(CommandError) as refused:
        command("start_workflow", "ping")
    assert "is still running, and the workflow's overlap policy is skip" in str(refused.value)
    assert "nothing was stored" in str(refused.value)

    listed = json.loads(command("list_executions", "--workflow", "ping", "--json"))
    assert [e["id"] for e in listed["executions"]] == [started["id"]]
    table = command("list_executions")
    assert "ping" in table and "running" in table and "1 execution(s)" in table

    services.execution_cancel(execution=Execution.objects.get(pk=started["id"]))
    shown = json.loads(command("show_execution", str(started["id"]), "--json"))
    assert (shown["status"], shown["error"]) == ("cancelled", "States.Cancelled")
    assert shown["data"] == {"env": "prod"} and [h["state"] for h in shown["history"]] == ["Ping"]
    assert [(s["state_name"], s["state"]) for s in shown["steps"]] == [("Ping", "cancelled")]
    text = command("show_execution", str(started["id"]))
    assert f"execution {started['id']}  ping v1" in text and "Task     Ping" in text


def test_workflow_commands_name_what_is_missing_or_wrong(ping):
    with pytest.raises(CommandError, match="No workflow named 'nope'"):
        command("start_workflow", "nope")
    with pytest.raises(CommandError, match="input: not valid JSON"):
        command("start_workflow", "ping", "--input", "{")
    with pytest.raises(CommandError, match="input: must be a JSON object"):
        command("start_workflow", "ping", "--input", "[1]")
    with pytest.raises(CommandError, match="No execution with id 999"):
        command("show_execution", "999")


def test_schedule_workflow_sets_and_removes_a_rule(ping):
    job = json.loads(command("schedule_workflow", "ping", "--every", "8 hours", "--json"))
    assert (job["action"], job["rate_every"], job["rate_unit"]) == ("workflow_start", 8, "hours")
    assert job["payload"] == {"workflow": "ping"}
    ping.refresh_from_db()
    assert ping.schedule_id == job["id"]
    with pytest.raises(CommandError, match="cron"):
        command("schedule_workflow", "ping", "--cron", "every day")
    assert command("schedule_workflow", "ping", "--remove").strip() == "ping: rule removed"
    ping.refresh_from_db()
    assert ping.schedule is None
