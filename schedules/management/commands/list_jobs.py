"""list_jobs: the newest-due jobs, filtered, as a table or JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules.models import Job, PlanStatus, ScheduleType
from schedules.selectors import describe_schedule
from schedules.services.jobs import RULE_FIELDS

from ._shared import EXIT_STATUS, iso, parse_due, write_json

COLUMNS = "{id:>8}  {status:<9}  {action:<16}  {due:<19}  {schedule:<28}  {precision:<9}  {name}"
FIELDS = (
    "id",
    "name",
    "action",
    "status",
    "precision",
    "due_at",
    "time_zone",
    "owner_id",
    *RULE_FIELDS,
    "run_count",
)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Command(BaseCommand):
    help = (
        "List jobs, latest due time first, at most --limit of them (the query reads no more "
        "rows than that). Filters combine. Prints a fixed-width table (id, status, action, "
        "due_at in UTC (a recurring job's next occurrence), schedule in words, precision, "
        'name), or with --json {"jobs": [...], "more": bool}. ' + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", choices=PlanStatus.values, help="Only jobs in this status.")
        parser.add_argument("--action", help="Only jobs running this action, e.g. send_email.")
        parser.add_argument(
            "--schedule-type",
            choices=ScheduleType.values,
            help="Only one-off jobs (once) or recurring ones (rate, cron).",
        )
        parser.add_argument(
            "--due-after", metavar="ISO8601", help="Only jobs due at or after this time (aware)."
        )
        parser.add_argument(
            "--due-before", metavar="ISO8601", help="Only jobs due before this time (aware)."
        )
        parser.add_argument("--owner", metavar="USERNAME", help="Only jobs owned by this user.")
        parser.add_argument(
            "--limit", type=int, default=50, metavar="N", help="Most jobs shown (default 50)."
        )
        parser.add_argument("--json", action="store_true", help="Print the jobs as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        limit = options["limit"]
        if not 1 <= limit <= 10_000:
            raise CommandError("limit: must be from 1 to 10000; narrow the filters for more.")
        jobs = Job.objects.only(*FIELDS)
        if options["status"]:
            jobs = jobs.filter(status=options["status"])
        if options["action"]:
            jobs = jobs.filter(action=options["action"])
        if options["schedule_type"]:
            jobs = jobs.filter(schedule_type=options["schedule_type"])
        if options["due_after"]:
            jobs = jobs.filter(due_at__gte=parse_due(options["due_after"], field="due_after"))
        if options["due_before"]:
            jobs = jobs.filter(due_at__lt=parse_due(options["due_before"], field="due_before"))
        if options["owner"]:
            jobs = jobs.filter(owner__username=options["owner"])
        rows = list(jobs.order_by("-due_at", "-pk")[: limit + 1])
        more, rows = len(rows) > limit, rows[:limit]
        if options["json"]:
            fields = ("id", "status", "action", "precision", "name", "time_zone", "schedule_type")
            data = [
                {f: getattr(job, f) for f in fields}
                | {"due_at": iso(job.due_at), "schedule": describe_schedule(job)}
                for job in rows
            ]
            write_json(self, {"jobs": data, "limit": limit, "more": more})
            return
        self.stdout.write(
            COLUMNS.format(
                id="ID",
                status="STATUS",
                action="ACTION",
                due="DUE_AT (UTC)",
                schedule="SCHEDULE",
                precision="PRECISION",
                name="NAME",
            )
        )
        for job in rows:
            self.stdout.write(
                COLUMNS.format(
                    id=job.pk,
                    status=job.status,
                    action=clip(job.action, 16),
                    due=f"{job.due_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}",
                    schedule=clip(describe_schedule(job), 28),
                    precision=job.precision,
                    name=clip(job.name, 40),
                ).rstrip()
            )
        suffix = f"; more match, raise --limit (now {limit}) or narrow the filters" if more else ""
        self.stdout.write(f"{len(rows)} job(s){suffix}")
