"""resume_job: resume one or more paused jobs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from schedules import services
from schedules.models import PlanStatus

from ._shared import EXIT_STATUS, each_job


class Command(BaseCommand):
    help = (
        "Resume paused jobs by id: only each job's next run is armed again, re-planned by its "
        "missed policy (a one-off job whose due time passed while paused runs now; a recurring "
        "job's occurrences missed meanwhile run once, each in turn, or not at all: run_once, "
        "run_all, skip). A job that is not paused stays as it is. Each id is handled on its "
        'own. Prints one line per job, or with --json {"resumed": [ids], "unchanged": [ids '
        'not paused], "errors": [{id, error}]}. '
        + EXIT_STATUS
        + " Any id not resumed (unknown, or ended: cancelled, succeeded, failed) makes it 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="+", type=int, metavar="ID", help="Job ids to resume.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        each_job(
            self,
            options["ids"],
            lambda job: services.job_resume(job=job),
            done="resumed",
            unchanged=lambda job: job.status != PlanStatus.PAUSED,
            as_json=options["json"],
        )
