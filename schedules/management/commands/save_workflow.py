"""save_workflow: save a workflow definition from a JSON file (create, or next version)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from schedules import services
from schedules.models import Workflow

from ._shared import EXIT_STATUS, read_json_file, validation_failed, write_json


class Command(BaseCommand):
    help = (
        "Save the workflow NAME with the definition in FILE (JSON; - reads standard input): "
        "a new workflow at version 1, or, if NAME exists and the definition changed, its "
        "next version (executions keep the version they started with). The definition is "
        "checked first; every error names the state and the field, and nothing is saved. "
        'Prints "NAME vN", or with --json {"id", "name", "version", "created"}. ' + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="Letters, digits, hyphens and underscores.")
        parser.add_argument("file", help="The definition, a JSON file (- for stdin).")
        parser.add_argument("--description", help="Kept with the workflow.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        definition = read_json_file(options["file"], field="definition")
        existing = Workflow.objects.filter(name=options["name"]).first()
        try:
            if existing is None:
                workflow = services.workflow_create(
                    name=options["name"],
                    definition=definition,
                    description=options["description"] or "",
                )
            else:
                workflow = services.workflow_update(
                    workflow=existing,
                    definition=definition,
                    description=options["description"],
                )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="The workflow was not saved"
            ) from exc
        if options["json"]:
            write_json(
                self,
                {
                    "id": workflow.pk,
                    "name": workflow.name,
                    "version": workflow.version,
                    "created": existing is None,
                },
            )
        else:
            self.stdout.write(f"{workflow.name} v{workflow.version}")
