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
