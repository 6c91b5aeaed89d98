"""cancel_job: cancel one or more jobs."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from schedules import services

from ._shared import EXIT_STATUS, error_dict, get_job, jobs_refused, write_json


class Command(BaseCommand):
    help = (
        "Cancel jobs by id: their pending step never runs (its timer is disarmed and a message "
        "already on its way is skipped); an attempt already running finishes. Each id is "
        "handled on its own: the others are still cancelled when one fails. Prints one line "
        'per cancelled job, or with --json {"cancelled": [ids], "errors": [{id, error}]}. '
        + EXIT_STATUS
        + " Any id not cancelled (unknown, or already finished) makes it 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="Job ids to cancel.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        cancelled: list[int] = []
        errors: list[dict[str, Any]] = []
        for job_id in options["ids"]:
            try:
                services.job_cancel(job=get_job(job_id))
            except CommandError as exc:
                errors.append({"id": job_id, "error": {"id": [str(exc)]}})
            except ValidationError as exc:
                errors.append({"id": job_id, "error": error_dict(exc)})
            except services.Busy as exc:
                errors.append({"id": job_id, "error": {"database": [str(exc)]}})
            else:
                cancelled.append(job_id)
                if not options["json"]:
                    self.stdout.write(self.style.SUCCESS(f"cancelled job {job_id}"))
        if options["json"]:
            write_json(self, {"cancelled": cancelled, "errors": errors})
        if errors:
            raise jobs_refused(errors, total=len(options["ids"]), done="cancelled")
