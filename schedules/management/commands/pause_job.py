"""pause_job: pause one or more jobs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from schedules import services
from schedules.models import PlanStatus

from ._shared import EXIT_STATUS, each_job


class Command(BaseCommand):
    help = (
        "Pause jobs by id: each job's pending step is held, its timer disarmed on its engine "
        "(a message already on its way is skipped), until resume_job; an attempt already "
        "running finishes, and a recurring job plans nothing more meanwhile. A job already "
        "paused stays as it is. --reason says why (shown in the admin, the API and show_job). "
        "Each id is handled on its own. Prints one line per job, or with --json "
        '{"paused": [ids], "unchanged": [ids already paused], "errors": [{id, error}]}. '
        + EXIT_STATUS
        + " Any id not paused (unknown, or ended: cancelled, succeeded, failed) makes it 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="Job ids to pause.")
        parser.add_argument(
            "--reason", default="", help="Why the jobs are paused (at most 500 characters)."
        )
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        each_job(
            self,
            options["ids"],
            lambda job: services.job_pause(job=job, reason=options["reason"]),
            done="paused",
            unchanged=lambda job: job.status == PlanStatus.PAUSED,
            as_json=options["json"],
        )
