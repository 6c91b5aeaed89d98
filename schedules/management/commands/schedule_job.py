"""schedule_job: schedule one action at a due time."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from schedules import services

from ._shared import (
    EXIT_STATUS,
    ServiceCommand,
    add_job_options,
    job_as_dict,
    job_options,
    parse_json,
    read_json_file,
    validation_failed,
    write_json,
)


class Command(ServiceCommand):
    help = (
        "Schedule a job: run the registered action --action with a JSON payload once at "
        "--due, or by a rule, --every (a rate) or --cron, from --starts to --ends or for "
        "--max-runs runs. The payload is checked against the action's schema, the due time "
        "against the rules (time zone required, SCHEDULES_PAST_GRACE, SCHEDULES_MAX_AHEAD), "
        "and a rule when it is given (a bad cron, zone or rate is refused, naming it). A "
        "polling action (http_check) needs --poll-interval and a limit. Prints the new job's "
        "id, or the job as JSON with --json. " + EXIT_STATUS
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--action", required=True, help="Registered action name, e.g. send_email or noop."
        )
        payload = parser.add_mutually_exclusive_group()
        payload.add_argument(
            "--payload",
            metavar="JSON",
            help="The action's arguments as a JSON object (default {}).",
        )
        payload.add_argument(
            "--payload-file",
            metavar="PATH",
            help="Read the payload from a JSON file ('-' reads standard input).",
        )
        add_job_options(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["payload_file"]:
            payload = read_json_file(options["payload_file"], field="payload")
        else:
            payload = parse_json(options["payload"] or "{}", field="payload")
        try:
            job = services.job_schedule(
                action=options["action"], payload=payload, **job_options(options)
            )
        except ValidationError as exc:
            raise validation_failed(
                self, exc, as_json=options["json"], what="The job was not scheduled"
            ) from exc
        if options["json"]:
            write_json(self, job_as_dict(job))
        else:
            self.stdout.write(str(job.pk))
