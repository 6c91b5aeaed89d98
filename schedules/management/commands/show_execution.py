"""show_execution: one workflow execution, its state history, steps and runs."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.models import Execution, Run

from ._shared import EXIT_STATUS, STEPS_SHOWN, execution_as_dict, write_json, write_runs


class Command(BaseCommand):
    help = (
        "Show one workflow execution: its status, the state it is in or ended in (and why it "
        "failed), its data, the states it went through (and by which way out of the state "
        f"before), and its newest {STEPS_SHOWN} runs, each with its state, attempt, status "
        "and lateness. --json prints the same as one JSON object, with its steps. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, metavar="ID", help="Execution id.")
        parser.add_argument("--json", action="store_true", help="Print it as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        execution = (
            Execution.objects.select_related("workflow", "version").filter(pk=options["id"]).first()
        )
        if execution is None:
            raise CommandError(
                f"No execution with id {options['id']}; `python manage.py list_executions` "
                "shows the existing ones."
            )
        if options["json"]:
            write_json(self, execution_as_dict(execution, detail=True))
            return
        out = self.stdout.write
        out(
            self.style.MIGRATE_HEADING(
                f"execution {execution.pk}  {execution.workflow.name} v{execution.version.version}"
            )
        )
        data = execution_as_dict(execution)
        for label in (
            "status",
            "state",
            "error",
            "cause",
            "start_key",
            "started_at",
            "finished_at",
        ):
            if data[label] not in ("", None):
                out(f"  {label:<14}{data[label]}")
        out(f"  {'data':<14}{json.dumps(execution.data, sort_keys=True)[:2000]}")
        dropped = execution.transitions - len(execution.history)
        out(
            self.style.MIGRATE_HEADING(
                "states" + (f" (the first {dropped} not kept)" if dropped else "")
            )
        )
        for entry in execution.history:
            via = f"  (from {entry['from']}, {entry['via']})" if entry["from"] else ""
            out(f"  {entry['at'][:23]}  {entry['type']:<8} {entry['state']}{via}")
        runs = Run.objects.filter(execution=execution).select_related("step")
        shown = list(runs.order_by("-started_at", "-pk")[:STEPS_SHOWN])
        total = runs.count() if len(shown) == STEPS_SHOWN else len(shown)
        write_runs(self, shown, total, state=True)
