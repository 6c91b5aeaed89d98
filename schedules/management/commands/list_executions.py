"""list_executions: the newest executions of workflows, filtered, as a table or JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.models import Execution, ExecutionStatus

from ._shared import EXIT_STATUS, execution_as_dict, write_json
from .list_jobs import clip

COLUMNS = "{id:>8}  {status:<9}  {workflow:<24}  {version:>4}  {started:<19}  {state:<20}  {error}"


class Command(BaseCommand):
    help = (
        "List workflow executions, newest first, at most --limit of them. Prints a table "
        "(id, status, workflow, version, started in UTC, the state it is in or ended in, "
        'the error), or with --json {"executions": [...], "more": bool}. ' + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workflow", metavar="NAME", help="Only this workflow's executions.")
        parser.add_argument("--status", choices=ExecutionStatus.values, help="Only this status.")
        parser.add_argument(
            "--limit", type=int, default=50, metavar="N", help="Most shown (default 50)."
        )
        parser.add_argument("--json", action="store_true", help="Print them as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if not 1 <= limit <= 10_000:
            raise CommandError("limit: must be from 1 to 10000; narrow the filters for more.")
        executions = Execution.objects.select_related("workflow", "version").defer(
            "input", "data", "history", "version__definition", "workflow__definition"
        )
        if options["workflow"]:
            executions = executions.filter(workflow__name=options["workflow"])
        if options["status"]:
            executions = executions.filter(status=options["status"])
        rows = list(executions.order_by("-started_at", "-pk")[: limit + 1])
        more, rows = len(rows) > limit, rows[:limit]
        if options["json"]:
            data = [execution_as_dict(execution) for execution in rows]
            write_json(self, {"executions": data, "limit": limit, "more": more})
            return
        header = {"id": "ID", "status": "STATUS", "workflow": "WORKFLOW", "version": "VER"}
        self.stdout.write(
            COLUMNS.format(**header, started="STARTED (UTC)", state="STATE", error="ERROR")
        )
        for execution in rows:
            self.stdout.write(
                COLUMNS.format(
                    id=execution.pk,
                    status=execution.status,
                    workflow=clip(execution.workflow.name, 24),
                    version=execution.version.version,
                    started=f"{execution.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
                    state=clip(execution.state_name, 20),
                    error=clip(execution.error, 40),
                ).rstrip()
            )
        suffix = f"; more match, raise --limit (now {limit}) or narrow the filters" if more else ""
        self.stdout.write(f"{len(rows)} execution(s){suffix}")
