"""reschedule_job: move a pending job to a new due time."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandParser

from schedules import services
from schedules.models import Step

from ._shared import (
    DUE_HELP,
    EXIT_STATUS,
    get_job,
    iso,
    job_as_dict,
    parse_due,
    validation_failed,
    write_json,
)


class Command(BaseCommand):
    help = (
        "Move a scheduled job to a new due time. Its step gets a new version: the old timer "
        "is disarmed and a message already on its way is skipped, so the job runs once, at "
        "the new time. Only a job that has not run yet can be rescheduled. Prints what "
        "changed, or the job as JSON with --json. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id", type=int, metavar="ID", help="Job id.")
        parser.add_argument("--due", required=True, metavar="ISO8601", help=DUE_HELP)
        parser.add_argument("--json", action="store_true", help="Print the job as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(options["id"])
        due = parse_due(options["due"])
        try:
            job = services.job_reschedule(job=job, due_at=due)
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what=f"Job {job.pk} was not rescheduled"
            ) from exc
        if options["json"]:
            write_json(self, job_as_dict(job))
            return
        step = Step.objects.filter(job=job).order_by("-pk").first()
        version = f" (step version {step.version})" if step else ""
        self.stdout.write(
            self.style.SUCCESS(f"rescheduled job {job.pk} to {iso(job.due_at)}{version}")
        )
