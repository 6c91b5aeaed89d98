"""start_workflow: start an execution of a workflow."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from schedules import services

from ._shared import (
    EXIT_STATUS,
    ServiceCommand,
    execution_as_dict,
    get_owner,
    get_workflow,
    parse_json,
    validation_failed,
    write_json,
)


class Command(ServiceCommand):
    help = (
        "Start an execution of the workflow NAME at its current version, its data starting "
        "as --input. With --start-key, a second start with the same key prints the execution "
        "the first one started instead of starting another. While an execution of NAME "
        "runs and its overlap policy is skip, the start is refused. Prints the execution's "
        'id, or with --json the execution ({"id", "status", "state", ...}). ' + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The workflow's name.")
        parser.add_argument(
            "--input", default="{}", metavar="JSON", help="The data it starts with (an object)."
        )
        parser.add_argument(
            "--start-key", default="", metavar="KEY", help="Start at most once with this key."
        )
        parser.add_argument("--owner", metavar="USERNAME", help="User who owns the execution.")
        parser.add_argument("--json", action="store_true", help="Print the execution as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow = get_workflow(options["name"])
        try:
            started = services.execution_start(
                workflow=workflow,
                input=parse_json(options["input"], field="input"),
                start_key=options["start_key"],
                owner=get_owner(options["owner"]),
            )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="No execution was started"
            ) from exc
        if options["json"]:
            write_json(self, execution_as_dict(started.execution) | {"created": started.created})
        else:
            self.stdout.write(str(started.execution.pk))
