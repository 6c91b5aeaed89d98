"""schedule_purge: keep one recurring job that runs the retention purge (or remove it)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from schedules import services
from schedules.selectors import describe_schedule, job_next_occurrences
from schedules.services.retention import PURGE_DEFAULT_CRON

from ._shared import EXIT_STATUS, ServiceCommand, iso, job_as_dict, validation_failed, write_json


class Command(ServiceCommand):
    help = (
        "Run the retention purge (manage.py purge) as a recurring job of the scheduler "
        f"itself: by --cron (default '{PURGE_DEFAULT_CRON}', daily at 03:00) read in "
        "--time-zone (default UTC). Creates the job, or brings the one there is in line: "
        "running it again (at every deploy) changes nothing. --remove cancels it. What the "
        "purge deletes comes from the SCHEDULES_KEEP_* settings. Prints what it did and the "
        "job, or with --json "
        '{"change": "created|updated|replaced|unchanged|removed|none", "job": {...}}. '
        + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cron",
            default=PURGE_DEFAULT_CRON,
            metavar="EXPR",
            help=f"5-field cron rule (default '{PURGE_DEFAULT_CRON}').",
        )
        parser.add_argument(
            "--time-zone", default="UTC", metavar="ZONE", help="IANA zone --cron is read in."
        )
        parser.add_argument(
            "--batch-size", type=int, metavar="N", help="Rows per transaction (default: setting)."
        )
        parser.add_argument(
            "--pause",
            type=float,
            metavar="SECONDS",
            help="Sleep between batches (default: setting).",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            metavar="SECONDS",
            help="Longest one purge run lasts (default 900); the next run goes on.",
        )
        parser.add_argument("--remove", action="store_true", help="Cancel the purge job.")
        parser.add_argument("--json", action="store_true", help="Print the outcome as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["remove"]:
            removed = services.purge_unschedule()
            change = "removed" if removed else "none"
            if options["json"]:
                write_json(self, {"change": change, "job": removed and job_as_dict(removed)})
            else:
                self.stdout.write(
                    f"purge job {removed.pk} cancelled" if removed else "no purge job"
                )
            return
        names = {"batch_size": "batch_size", "pause": "pause", "max_seconds": "max_seconds"}
        payload = {key: options[opt] for key, opt in names.items() if options[opt] is not None}
        try:
            job, change = services.purge_schedule(
                cron=options["cron"], time_zone=options["time_zone"], payload=payload
            )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="The purge job was not saved"
            ) from exc
        if options["json"]:
            write_json(self, {"change": change, "job": job_as_dict(job, payload=True)})
            return
        upcoming = ", ".join(iso(t) or "" for t in job_next_occurrences(job, count=2))
        self.stdout.write(
            self.style.SUCCESS(f"purge job {job.pk} {change}: {describe_schedule(job)}")
            + f"; next runs {upcoming}"
        )
